"""`curate cluster`: k-means clusters of a scores tag's image embeddings, and what the
recipes that read them need per sample (image_based: the clusters nearest a target image
set; semdedup: each sample's similarity to a better-ranked member of its cluster).

Modules, one job each:

- assign    spherical k-means (curate.dedup.vectors' train_centroids) and every row's cluster,
            in one streamed pass (a cluster id and a similarity per row, no vectors kept)
- semdedup  SemDeDup's per-sample similarity to an earlier-ranked member of its cluster,
            clusters gathered from the memory-mapped embeddings a batch at a time
- target    the --near images' embeddings (a suite's train splits, an image folder...) and
            each cluster's hits and similarity to them
- run       the stage: clusters/NAME/assignments.parquet + summary.json, skipped when unchanged
"""
