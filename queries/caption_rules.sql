-- Keep the candidates whose caption looks like a description: long enough, a few words,
-- and not a camera or file name ("IMG_2041.jpg", "DSC00123").
-- @param min_chars = 5  shortest caption kept, in characters (after trimming)
-- @param min_words = 2  fewest words kept
SELECT c.uid
FROM candidates c JOIN samples s USING (uid)
WHERE s.caption IS NOT NULL
  AND length(trim(s.caption)) >= $min_chars
  AND len(string_split_regex(trim(s.caption), '\s+')) >= $min_words
  AND NOT regexp_matches(trim(s.caption), '(?i)^[\w.\- ]*\.(jpe?g|png|gif|webp|bmp|tiff?)$')
  AND NOT regexp_matches(trim(s.caption), '(?i)^(img|dsc|dscn|dcim|image|photo|pic|screenshot)[_\- ]?\d+')
