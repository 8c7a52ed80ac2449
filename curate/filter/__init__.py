"""`curate filter`: select a subset of a pool with a DuckDB recipe, or import DataComp's.

Modules, one job each:

- recipes        load .sql recipes and their `-- @param` headers; parse --param and --top
- candidates     the `candidates` view every recipe reads (scores, --dedup, --where, --by)
- top_fraction   the top_fraction recipe in one score pass and one uid pass, same result
- datacomp_uids  32-hex uids <-> DataComp (high, low) uint64 pairs, vectorised; their order
- subsets        subsets/NAME.parquet + .npy written atomically, read back, DataComp .npy read
- run            the stage: run_filter (a recipe) and import_npy (a DataComp/DFN file)
"""
