"""`train`: the training command line. Subcommands live in train/commands/<name>.py."""
from __future__ import annotations

from clikit.app import make_app, quiet_environment, run_app

quiet_environment()

# Order here is the order in `train --help`.
COMMANDS = ("run", "mim", "weak_to_strong", "models", "eval")

app = make_app(
    "train",
    "Train EVA-CLIP models on curated shards under fixed compute budgets.",
    [f"train.commands.{name}" for name in COMMANDS],
)


def main() -> None:
    run_app(app, "train")


if __name__ == "__main__":
    main()
