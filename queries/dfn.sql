-- Data Filtering Networks (Fang et al. 2023): the top-k cut by the score of a filter network,
-- a CLIP trained only on a small high-quality set instead of a general one. The quickstart's
-- scratch seed is one (trained on the clean seed set alone: tag `seed`); any `train run`
-- can rank: `curate score POOL --checkpoint RUN --tag dfn`. The candidates are those of the
-- --scores tag (and --dedup, --where); their rank is the $ranker tag's clip_score.
-- @param ranker = 'dfn'  scores tag of the filter network (scores/TAG)
-- @param fraction = 0.3  share of the candidates the ranker scored to keep
-- @param count = null    how many to keep instead (used when fraction is null)
-- @needs scores_all.tag  curate score POOL --checkpoint RUN --tag dfn
WITH ranker AS (
    SELECT CASE WHEN count(*) = 0 THEN error('recipe dfn ranks by scores tag ''' || $ranker || ''', which the '
        || 'pool lacks: run `curate score POOL --checkpoint RUN --tag ' || $ranker || '` or pass --param ranker=TAG')
        END AS missing
    FROM scores_all WHERE tag = $ranker
),
ranked AS (
    SELECT c.uid, r.clip_score AS score
    FROM candidates c JOIN scores_all r ON r.uid = c.uid AND r.tag = $ranker
    WHERE (SELECT missing FROM ranker) IS NULL
)
SELECT uid FROM top_k(ranked, $fraction, $count)
