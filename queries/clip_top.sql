-- DataComp's CLIP score filter as a share: the top $fraction of the candidates by the seed
-- model's score (the top-k cut of queries/shared/top_k.sql, ties by uid; top_fraction with
-- DataComp's best share, 30%, as its default).
-- @param fraction = 0.3  share of the scored candidates to keep
-- @param count = null    how many to keep instead (used when fraction is null)
SELECT uid FROM top_k(candidates, $fraction, $count)
