"""scikit-learn's 1,797 handwritten digits as the zoo's `digits` model takes them: the labelled data of the rollout
and fit tests (evaluation gates, training sets, held-out splits)."""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits


def digits(n: int | None = None, offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Rows `offset` to `offset + n` (all of them from `offset` when `n` is None): the 64 pixels scaled to 0..1 as
    float32, and the labels as int64."""
    x, y = load_digits(return_X_y=True)
    rows = slice(offset, None if n is None else offset + n)
    return (x[rows] / 16.0).astype(np.float32), y[rows].astype(np.int64)
