-- The usual curation in one statement: drop duplicates, drop bad captions and bad images,
-- then keep the best share by score of what is left (the top-k cut of queries/shared/top_k.sql,
-- ties by uid, as in top_fraction).
-- @param min_chars = 5      shortest caption kept
-- @param min_words = 2      fewest caption words kept
-- @param min_side = 32      smallest allowed shorter image side, in pixels
-- @param max_aspect = 3.0   largest allowed aspect ratio
-- @param fraction = 0.4     share of the clean, scored samples to keep
-- @param count = null       how many to keep instead (used when fraction is null)
-- @needs dedup.keep  curate dedup POOL --scores TAG
-- @needs samples.caption  curate download INPUT POOL
WITH clean AS (
    SELECT c.uid, c.score
    FROM candidates c JOIN samples s USING (uid)
    WHERE c.score IS NOT NULL
      AND c.uid IN (SELECT uid FROM dedup WHERE keep)
      AND s.caption IS NOT NULL
      AND length(trim(s.caption)) >= $min_chars
      AND caption_words(s.caption) >= $min_words
      AND NOT caption_is_file_name(s.caption)
      AND image_shape_ok(c.width, c.height, $min_side, $max_aspect)
)
SELECT uid FROM top_k(clean, $fraction, $count)
