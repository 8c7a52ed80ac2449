-- Keep one sample per duplicate group: the candidates the dedup run marked `keep`.
-- Uses the `dedup` view (the pool's only dedup run, or --dedup NAME).
-- @needs dedup.keep  curate dedup POOL --scores TAG
SELECT uid FROM candidates
WHERE uid IN (SELECT uid FROM dedup WHERE keep)
