"""`curate`: the curation command line. Subcommands live in curate/commands/<name>.py."""
from __future__ import annotations

import os

from clikit.app import make_app, quiet_environment, run_app

quiet_environment()
# OpenMP threads that spin while idle steal the cores from the decoding workers (`curate
# score`): sleeping instead measured 7-15% faster there (bench/score.py), the model alone
# no slower. Read once, when torch loads its OpenMP runtime, so it is set before that.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# Order here is the order in `curate --help` (the pipeline's `quickstart` is plugged in).
COMMANDS = ("demo", "serve", "download", "inspect", "score", "annotate", "dedup", "cluster", "sql", "filter", "export",
            "verify", "eval_suite")

app = make_app(
    "curate",
    "Curate a web-scale image-text pool down to its best slice.",
    [f"curate.commands.{name}" for name in COMMANDS],
)


def main() -> None:
    run_app(app, "curate")


if __name__ == "__main__":
    main()
