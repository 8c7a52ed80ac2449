-- The top-k cut, defined once: the recipes call it (top_fraction, combined, random_sample's
-- slice) and `curate filter --top`'s fast path (curate/filter/top_fraction.py) computes
-- top_k_quota with it. `curate filter` creates these macros next to the `candidates` view.
--
-- k: $count when given, else round($fraction x the scored rows) (DuckDB's round: halves
-- away from zero), at least 1 and at most all of them.
CREATE OR REPLACE TEMP MACRO top_k_quota(n, fraction, count) AS
    least(n, coalesce(count, greatest(1, round(fraction * n))))::BIGINT;

-- The k best rows of `rows` (a view, table or CTE with uid and score) by score; rows
-- without a score never count. Ties at the cut are broken by uid, ascending, so the result
-- is deterministic. The cut is found on the score column alone; uids are then picked by
-- comparing with it, so the uids themselves are never sorted (only the few tied at the cut).
CREATE OR REPLACE TEMP MACRO top_k(rows, fraction, count) AS TABLE
WITH ranked AS NOT MATERIALIZED (  -- re-read rather than held in memory: cheaper for large pools
    SELECT uid, score FROM query_table(rows) WHERE score IS NOT NULL
),
quota AS (
    SELECT top_k_quota(count(*), fraction, count) AS k FROM ranked
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
);
