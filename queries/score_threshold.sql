-- Keep the candidates whose score is at least $min_score (DataComp's "CLIP score"
-- baseline). A good threshold depends on the seed model: look at the distribution first,
-- e.g. curate sql POOL "SELECT quantile_cont(clip_score, [0.1, 0.5, 0.9]) FROM scores".
-- @param min_score = 0.28  lowest score kept
SELECT uid FROM candidates WHERE score >= $min_score
