"""The main job's data: scikit-learn's bundled digits, split as ``python -m kops train``
(:mod:`kops.cli.main_job`) and the solver tests use it: the 8x8 digits (1797 images, 10
classes; pixel values scaled to [0, 1]), a stratified 80/20 split.
"""
from __future__ import annotations

import numpy as np


def load_digits_split(seed: int = 0):
    """(X_train, X_test, y_train, y_test) of the bundled digits data, X scaled to [0, 1]."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    return train_test_split(X, y, test_size=0.2, random_state=seed, stratify=y)
