-- Keep the best share of the candidates by score (Scaling Down CLIP: top 40% by CLIP score).
-- `curate filter --top 40%` runs this recipe. The share is of the candidates that have a
-- score; ties at the cut are broken by uid, ascending, so the result is deterministic
-- (the top-k cut of queries/shared/top_k.sql).
-- @param fraction = null  share of the scored candidates to keep, in (0, 1]
-- @param count = null     how many to keep instead (used when fraction is null)
SELECT uid FROM top_k(candidates, $fraction, $count)
