-- Keep the best share of the candidates by score (Scaling Down CLIP: top 40% by CLIP score).
-- `curate filter --top 40%` runs this recipe. The share is of the candidates that have a
-- score; ties at the cut are broken by uid, ascending, so the result is deterministic.
-- The cut is found on the score column alone; uids are then picked by comparing with it,
-- so the uids themselves are never sorted (only the few tied at the cut).
-- @param fraction = null  share of the scored candidates to keep, in (0, 1]
-- @param count = null     how many to keep instead (used when fraction is null)
WITH ranked AS NOT MATERIALIZED (  -- re-read rather than held in memory: cheaper for large pools
    SELECT uid, score FROM candidates WHERE score IS NOT NULL
),
quota AS (
    SELECT least(count(*), coalesce($count, greatest(1, round($fraction * count(*)))))::BIGINT AS k
    FROM ranked
),
cut AS (
    SELECT score AS t FROM ranked
    ORDER BY score DESC
    LIMIT 1 OFFSET (SELECT greatest(k - 1, 0) FROM quota)
)
SELECT uid FROM ranked WHERE score > (SELECT t FROM cut)
UNION ALL
(
    SELECT uid FROM ranked WHERE score = (SELECT t FROM cut)
    ORDER BY uid
    LIMIT (SELECT k FROM quota) - (SELECT count(*) FROM ranked WHERE score > (SELECT t FROM cut))
)
