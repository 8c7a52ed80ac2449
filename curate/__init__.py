"""The curation stage: download, score, dedup, filter, export, inspect."""

__version__ = "0.1.0"
