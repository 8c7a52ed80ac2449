"""`curate annotate`: per-sample caption columns that do not depend on the seed model.

Modules, one job each:

- language  the caption's language (lingua, models in its wheel, a fixed set of web languages)
- matching  MetaCLIP's substring matching of captions against an entry list (Aho-Corasick)
- entries   the entry lists: WordNet's nouns (Debian's wordnet-base), a suite's class names, a file
- run       the stage: annotations/NNNNN.parquet per pool shard, resumable, + annotations.json
"""
