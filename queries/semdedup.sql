-- SemDeDup (Abbas et al. 2023): in each k-means cluster of the image embeddings, drop a sample
-- whose cosine to a member ranked before it is above 1 - $eps (SemDeDup's order: farthest
-- from the centroid first), so one of each group of semantic near-duplicates stays; a
-- cluster's first member always does. `curate cluster` stores each sample's similarity.
-- @param eps = 0.03  a sample whose cosine to an earlier member is above 1 - eps is dropped (SemDeDup tunes eps to the share it removes)
-- @needs clusters.semdedup_similarity  curate cluster POOL --scores TAG
SELECT c.uid
FROM candidates c JOIN clusters k USING (uid)
WHERE k.semdedup_similarity IS NULL OR k.semdedup_similarity <= 1 - $eps
