"""`train sweep`: budgeted grids of train runs over data slices, sizes, models, strategies,
budgets and seeds (spec: the sweep file; subsets, cost: shared work; cell, executors, run:
running them; results: DIR/results.parquet)."""
