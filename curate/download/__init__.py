"""`curate download`: img2dataset into a pool with stable uids, safety checks and exact resume."""
