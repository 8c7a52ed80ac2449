-- A seeded random sample of a top slice: first the best $within share of the scored
-- candidates by score (ties by uid, as in top_fraction; 1.0 = all of them), then $fraction
-- of that slice (or $count samples) drawn at random; both counts are the top-k quota of
-- queries/shared/top_k.sql. The draw orders the slice by md5(uid, $seed), so the same seed
-- gives the same sample on any machine, and a smaller sample of one seed is contained in a
-- larger one (`train sweep` data sizes).
-- @param within = 1.0     share of the scored candidates, best first, the sample is drawn from
-- @param fraction = null  share of that slice to keep, in (0, 1]
-- @param count = null     how many to keep instead (used when fraction is null)
-- @param seed = 0         random seed of the draw
WITH slice AS (
    SELECT uid FROM top_k(candidates, $within, NULL)
),
quota AS (
    SELECT top_k_quota(count(*), $fraction, $count) AS k FROM slice
)
SELECT uid FROM slice
ORDER BY md5(uid || ':' || CAST($seed AS VARCHAR)), uid
LIMIT (SELECT k FROM quota)
