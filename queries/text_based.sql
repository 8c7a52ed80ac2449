-- DataComp's text-based filter: English captions that name a class of the eval suite (the
-- names given to `curate annotate --classes`, matched as whole words, ignoring case).
-- @param language = 'en'  caption language kept (ISO 639-1; null keeps every language)
-- @needs annotations.class_ids  curate annotate POOL --classes SUITE
-- @needs annotations.caption_language  curate annotate POOL
SELECT c.uid
FROM candidates c JOIN annotations a USING (uid)
WHERE len(a.class_ids) > 0
  AND ($language IS NULL OR a.caption_language = $language)
