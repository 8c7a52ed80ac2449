"""The pipeline layer: runs curate and train together (the quickstart).

The only package allowed to import both stages (import-linter contracts in pyproject.toml).
Its commands are plugged into the `curate`/`train` CLIs through the `clipcurate.commands`
entry point group, so the stage CLIs never import this layer."""
