-- MetaCLIP's balancing (Xu et al. 2023): captions are matched against metadata entries
-- (`curate annotate`: WordNet's nouns and the suite's class names, MetaCLIP's substring rule);
-- an entry matched by at most $t candidates keeps them all, a larger one keeps each with
-- probability $t / its count, and a sample stays when any of its entries keeps it. Samples
-- matching no entry are dropped. The draws are md5(uid:entry:seed) (queries/shared/draws.sql):
-- the same seed gives the same subset anywhere.
-- @param t = 50     most samples an entry keeps, in expectation (MetaCLIP: 20,000 for its 400M pool; grow it with the pool)
-- @param seed = 0   seed of the draws
-- @needs annotations.entry_ids  curate annotate POOL
WITH matched AS NOT MATERIALIZED (  -- re-read rather than held: it is read twice
    SELECT c.uid, unnest(a.entry_ids) AS entry
    FROM candidates c JOIN annotations a USING (uid)
),
counts AS (
    SELECT entry, count(*) AS n FROM matched GROUP BY entry
)
SELECT m.uid
FROM matched m JOIN counts USING (entry)
GROUP BY m.uid
HAVING bool_or(n <= $t OR seeded_uniform(m.uid || ':' || m.entry, $seed) < $t / n)
