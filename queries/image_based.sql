-- DataComp's image-based filter: keep the samples whose k-means cluster (of the pool's image
-- embeddings) is the nearest one to some target image: an eval suite's training images or a
-- user's folder, given to `curate cluster --near`. With $fraction below 1, only those also in
-- the top $fraction of the candidates by score (DataComp's "image-based ∩ CLIP score").
-- @param min_hits = 1    target images a cluster must be the nearest to
-- @param fraction = 1.0  share of the scored candidates, best first, to intersect with (DataComp: 0.3; 1.0: the clusters alone)
-- @needs clusters.target_hits  curate cluster POOL --scores TAG --near SUITE_OR_FOLDER
SELECT c.uid
FROM candidates c JOIN clusters k USING (uid)
WHERE k.target_hits >= $min_hits
INTERSECT
SELECT uid FROM top_k(candidates, $fraction, NULL)
