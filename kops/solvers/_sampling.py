"""Random choices of the solvers: generators, batch orders, Nystrom samples and centers."""
from __future__ import annotations

import random

import numpy as np
import torch

from ._validation import check_X, default_count

__all__ = ["make_generator", "batches", "nystrom_sample", "select_centers"]

#: default Nystrom sample size s and damped eigendirections q (ALGORITHMS.md)
NYSTROM_SAMPLE = 3000
COMPONENTS = 150


def make_generator(random_state) -> torch.Generator:
    """A CPU torch.Generator from None (fresh seed), an int, or a Generator (used as is)."""
    if isinstance(random_state, torch.Generator):
        return random_state
    if random_state is None:
        seed = random.SystemRandom().randrange(2**62)
    elif isinstance(random_state, (int, np.integer)) and not isinstance(random_state, bool):
        seed = int(random_state)
    elif isinstance(random_state, np.random.RandomState):
        seed = int(random_state.randint(2**31 - 1))
    else:
        raise ValueError(f"random_state must be None, an int or a torch.Generator, got {random_state!r}")
    return torch.Generator().manual_seed(seed)


def batches(perm: torch.Tensor, size: int):
    """Consecutive slices of ``perm`` of length ``size`` (the last may be shorter)."""
    for start in range(0, perm.shape[0], size):
        yield perm[start : start + size]


def nystrom_sample(n: int, n_nystrom, n_components, generator, name_s="n_nystrom", name_q="n_components",
                   budget: int | None = None):
    """Indices S (a random subset of range(n)) of the Nystrom sample and the clipped (s, q).

    ``s`` defaults to min(3000, n), and with a ``budget`` to at most what the matrix-free
    eigensolver's block Krylov basis (16 blocks of s x (q + 16 + q / 10) doubles) can hold in
    half of it; a user value above n is clipped with a warning.
    ``q`` defaults to min(150, s - 1); a user value >= s raises ValueError.
    """
    default = NYSTROM_SAMPLE
    if budget is not None and n_nystrom is None:
        q0 = COMPONENTS if n_components is None else int(n_components)
        default = max(2 * q0 + 2, min(default, (budget // 2) // (8 * 16 * (q0 + 17 + q0 // 10))))
    s = default_count(n_nystrom, default, n, name_s)
    if s < 2:
        raise ValueError(f"the Nystrom preconditioner needs at least 2 points, got {name_s} = {s}")
    if n_components is not None and not isinstance(n_components, bool) and isinstance(n_components, int) \
            and n_components >= s:
        raise ValueError(f"{name_q} must be smaller than {name_s} (s = {s}), got {n_components}")
    q = default_count(n_components, COMPONENTS, s - 1, name_q)
    idx = torch.randperm(n, generator=generator)[:s]
    return idx, s, q


def select_centers(centers, X: torch.Tensor, generator, default: int = 10_000):
    """The centers Z (p, d) and, when drawn from X, their row indices (else None).

    ``centers`` is None (min(default, n) random training points), an int p (p random
    training points; p > n raises ValueError) or an array (p, d).
    """
    n = X.shape[0]
    if centers is None:
        centers = min(default, n)
    if isinstance(centers, bool):
        raise ValueError(f"centers must be an int, an array (p, d) or None, got {centers!r}")
    if isinstance(centers, (int, np.integer)) or (hasattr(centers, "ndim") and getattr(centers, "ndim") == 0):
        p = int(centers)
        if p < 2:
            raise ValueError(f"centers must be at least 2 (the projection needs a preconditioner), got {p}")
        if p > n:
            raise ValueError(f"centers={p} is larger than the number of training points n = {n}; "
                             "pass p <= n or an array of centers")
        idx = torch.randperm(n, generator=generator)[:p].to(X.device)
        return X[idx].contiguous(), idx
    Z = check_X(centers, "centers", X.device, X.dtype, d=X.shape[1])
    if Z.shape[0] < 2:
        raise ValueError(f"centers must hold at least 2 points, got shape {tuple(Z.shape)}")
    return Z, None
