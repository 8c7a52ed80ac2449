"""Linear probe: a logistic regression on the image tower's features of a task's train
split, scored on its test split (figures lp_acc1, lp_acc5, lp_mean_per_class_recall).

clip_benchmark's own probe cannot run on a CPU: its evaluate() asserts CUDA and its
train() moves the classifier with .cuda(). Its pieces that do run are used (Featurizer
for the features, through metrics.embed_images, and its metrics); the classifier is
scikit-learn's LogisticRegression (L-BFGS), the CLIP paper's probe, with the L2 strength
chosen on a held-out fifth of the train split as the CLIP paper chooses it on a validation
split, then fitted on the whole train split. The same probe runs on a GPU, so its figures
do not depend on the machine.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from clikit.errors import UserError

C_GRID = np.logspace(-3, 3, 7)  # inverse L2 strengths tried
HELD_OUT = 0.2


def _fit(features: np.ndarray, labels: np.ndarray, c: float):
    """Features standardised on the fitting images, so one grid of strengths suits every
    model's feature scale; one BLAS thread: on these small matrices threads only contend
    (two threads on a busy 2-core machine measured 37x slower)."""
    with warnings.catch_warnings(), threadpool_limits(1):
        warnings.simplefilter("ignore", ConvergenceWarning)
        return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=1000)).fit(features, labels)


def probe_logits(train_x: torch.Tensor, train_y: list[int], test_x: torch.Tensor, classes: int,
                 seed: int = 0) -> tuple[torch.Tensor, float]:
    """Test-split logits [n_test, classes] (classes the train split lacks get -inf) and the C used."""
    x, y = train_x.numpy().astype(np.float64), np.asarray(train_y)
    if len(np.unique(y)) < 2:
        raise UserError("the linear probe's train split holds one class; it needs at least two")
    order = np.random.default_rng(seed).permutation(len(y))
    cut = int(len(y) * HELD_OUT)
    fit_idx, val_idx = order[cut:], order[:cut]
    best_c = 1.0
    if cut and len(np.unique(y[fit_idx])) > 1:
        with threadpool_limits(1):
            accuracies = [(_fit(x[fit_idx], y[fit_idx], c).score(x[val_idx], y[val_idx]), -c) for c in C_GRID]
        best_c = -max(accuracies)[1]  # the best accuracy; on a tie the smaller C (stronger L2)
    model = _fit(x, y, best_c)
    logits = torch.full((len(test_x), classes), -torch.inf, dtype=torch.float64)
    with threadpool_limits(1):
        scores = model.decision_function(test_x.numpy().astype(np.float64))
    if scores.ndim == 1:  # two classes: one score, for the second
        scores = np.stack([-scores, scores], axis=1)
    logits[:, torch.as_tensor(model.classes_)] = torch.as_tensor(scores)
    return logits.float(), float(best_c)
