"""Training: losses, strategies, optimisers, the training loop, budgets and evaluation.

Models, checkpoints and torchrun setup live in the zoo, which scoring shares; importing
train registers the zoo's model configs with open_clip."""

import zoo as _zoo  # noqa: F401 - registers the project's model configs with open_clip
