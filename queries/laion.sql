-- LAION-2B's rule (Schuhmann et al. 2022): an English caption and an image-text cosine of at
-- least 0.28 under OpenAI's CLIP ViT-B/32. 0.28 is a ViT-B/32 cosine; another seed model's
-- scores sit elsewhere (the demo pools' seed CLIPs are not ViT-B/32), so give $fraction to
-- put the bar at that quantile instead: the top $fraction of the candidates by score (the
-- top-k cut of queries/shared/top_k.sql), of which the English ones are kept.
-- @param min_score = 0.28  lowest score kept (LAION's bar, for ViT-B/32 cosines)
-- @param fraction = null   instead of min_score: the share of the candidates, best first, above the bar
-- @param language = 'en'   caption language kept (ISO 639-1; null keeps every language)
-- @needs annotations.caption_language  curate annotate POOL
WITH above AS (
    SELECT uid FROM candidates WHERE $fraction IS NULL AND score >= $min_score
    UNION ALL
    SELECT uid FROM top_k(candidates, coalesce($fraction, 1.0), NULL) WHERE $fraction IS NOT NULL
)
SELECT b.uid
FROM above b JOIN annotations a USING (uid)
WHERE $language IS NULL OR a.caption_language = $language
