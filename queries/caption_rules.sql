-- Keep the candidates whose caption looks like a description: long enough, a few words,
-- and not a camera or file name ("IMG_2041.jpg", "DSC00123"; queries/shared/captions.sql).
-- @param min_chars = 5  shortest caption kept, in characters (after trimming)
-- @param min_words = 2  fewest words kept
-- @needs samples.caption  curate download INPUT POOL
SELECT c.uid
FROM candidates c JOIN samples s USING (uid)
WHERE s.caption IS NOT NULL
  AND length(trim(s.caption)) >= $min_chars
  AND caption_words(s.caption) >= $min_words
  AND NOT caption_is_file_name(s.caption)
