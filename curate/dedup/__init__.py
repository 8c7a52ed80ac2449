"""`curate dedup`: exact, perceptual and semantic duplicate groups over a scored pool.

Modules, one job each:

- scored_pool   find a scoring tag's shards, read their score columns, stream embeddings
- methods       the Method records by name: each one's defaults, inputs and pair finder
- graph         collect duplicate pairs per method and join them into groups
- hashes        exact (sha256) and perceptual-hash (Hamming ball) pair finders
- vectors       FAISS pair finders on embeddings: flat, IVF (knn) and SemDeDup clusters
- phash_pixels  perceptual-hash candidates confirmed by the stored thumbnails (the default with exact)
- phash_knn     perceptual-hash candidates confirmed by the embeddings
- calibrate     phash-knn's cosine bar measured on the pool
- keep          which member of each group is kept
- decontam      mark pool samples that are near duplicates of an evaluation set
- settings      the arguments: methods chosen, what summary.json records, checks
- run           the whole stage: outputs written atomically, skip when complete

Precision/recall of found pairs against a demo pool's truth.parquet: curate/truth/dedup.py.

Nothing here imports faiss at module import; callers pay for it only when they search.
"""
