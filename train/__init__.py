"""Training: losses, strategies, optimisers, the training loop, budgets and evaluation.

Models, checkpoints and torchrun setup live in the zoo, which scoring shares."""
