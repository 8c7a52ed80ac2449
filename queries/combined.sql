-- The usual curation in one statement: drop duplicates, drop bad captions and bad images,
-- then keep the best share by score of what is left (the top-k cut of queries/shared/top_k.sql,
-- ties by uid, as in top_fraction).
-- @param min_chars = 5      shortest caption kept
-- @param min_words = 2      fewest caption words kept
-- @param min_side = 32      smallest allowed shorter image side, in pixels
-- @param max_aspect = 3.0   largest allowed aspect ratio
-- @param fraction = 0.4     share of the clean, scored samples to keep
-- @param count = null       how many to keep instead (used when fraction is null)
WITH clean AS (
    SELECT c.uid, c.score
    FROM candidates c JOIN samples s USING (uid)
    WHERE c.score IS NOT NULL
      AND c.uid IN (SELECT uid FROM dedup WHERE keep)
      AND s.caption IS NOT NULL
      AND length(trim(s.caption)) >= $min_chars
      AND len(string_split_regex(trim(s.caption), '\s+')) >= $min_words
      AND NOT regexp_matches(trim(s.caption), '(?i)^[\w.\- ]*\.(jpe?g|png|gif|webp|bmp|tiff?)$')
      AND NOT regexp_matches(trim(s.caption), '(?i)^(img|dsc|dscn|dcim|image|photo|pic|screenshot)[_\- ]?\d+')
      AND least(c.width, c.height) >= $min_side
      AND greatest(c.width, c.height) <= $max_aspect * least(c.width, c.height)
)
SELECT uid FROM top_k(clean, $fraction, $count)
