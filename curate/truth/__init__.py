"""Checks of a curation run against a known truth: the demo pool's truth.parquet
(docs/design.md, "The demo pool"), which says what each sample really is (kind, dup_group).

- scoring  ROC AUC of a scores tag's clip_score: clean pairs vs mismatched/generic captions
- dedup    precision/recall of a dedup run's pairs against the planted duplicates, and
           which member each found group kept
- recipes  a subset's kept share and the precision of its captions (`curate filter --truth`)

Used by `curate quickstart` to report how well the seed model and dedup did.
"""
