"""Training: models, losses, optimisers, the training loop, evaluation, sweeps, reports."""
