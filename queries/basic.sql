-- DataComp's basic filter (Gadre et al. 2023): English captions of more than two words and
-- more than five characters, and images whose shorter side is large enough and whose aspect
-- ratio is at most 3, at their original size (img2dataset's original_width/height). DataComp
-- detects English with fasttext; `curate annotate` with lingua (docs/design.md, Annotate).
-- @param language = 'en'   caption language kept (ISO 639-1; null keeps every language)
-- @param min_words = 3     fewest caption words (DataComp: more than two)
-- @param min_chars = 6     shortest caption, in characters (DataComp: more than five)
-- @param min_side = 64     smallest shorter side of the original image, in pixels (DataComp: 200 at web scale; the demo pools' images are 64-256 px)
-- @param max_aspect = 3.0  largest longer side / shorter side
-- @needs annotations.caption_language  curate annotate POOL
-- @needs samples.original_width  curate download INPUT POOL
SELECT c.uid
FROM candidates c JOIN samples s USING (uid) JOIN annotations a USING (uid)
WHERE ($language IS NULL OR a.caption_language = $language)
  AND length(trim(s.caption)) >= $min_chars
  AND caption_words(s.caption) >= $min_words
  AND image_shape_ok(s.original_width, s.original_height, $min_side, $max_aspect)
