-- Seeded randomness as data: a uniform draw in [0, 1) from md5(key:seed), the same on any
-- machine and in any order of rows, so a recipe that samples (metaclip's per-entry draw) is
-- reproducible and needs no Python. 13 hex digits = 52 bits, exact in a DOUBLE.
CREATE OR REPLACE TEMP MACRO seeded_uniform(key, seed) AS
    CAST('0x' || substr(md5(CAST(key AS VARCHAR) || ':' || CAST(seed AS VARCHAR)), 1, 13) AS BIGINT)
    / 4503599627370496.0;
