"""Input conversion, validation, random generators and progress output shared by the solvers."""
from __future__ import annotations

import math
import random
import sys
import time

import numpy as np
import torch

from ..kernels import Kernel, resolve_kernel

__all__ = [
    "as_tensor",
    "check_X",
    "check_y",
    "encode_targets",
    "make_generator",
    "resolve_device",
    "resolve_dtype",
    "kernel_of",
    "batches",
    "Progress",
]

_DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16,
           "bfloat16": torch.bfloat16}


def resolve_device(device) -> torch.device:
    """``None`` -> the first CUDA device when present, else the CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be a torch device or a name such as 'cpu' or 'cuda', got {device!r}") from None


def resolve_dtype(dtype) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, str):
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(_DTYPES)}, got {dtype!r}")
        return _DTYPES[dtype]
    if isinstance(dtype, torch.dtype) and dtype in _DTYPES.values():
        return dtype
    try:  # numpy dtypes
        return _DTYPES[np.dtype(dtype).name]
    except (TypeError, KeyError):
        raise ValueError(f"dtype must be a floating dtype (float32 or float64), got {dtype!r}") from None


def kernel_of(kernel, bandwidth) -> Kernel:
    """A Kernel object from an object or a name plus a bandwidth (errors name the argument)."""
    return resolve_kernel(kernel, bandwidth)


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


def as_tensor(a, name: str, device, dtype=None) -> torch.Tensor:
    """A numpy array, list or tensor as a torch tensor on ``device`` (``dtype`` when given)."""
    if isinstance(a, torch.Tensor):
        t = a.detach()
    else:
        try:
            arr = np.asarray(a)
        except Exception as exc:  # noqa: BLE001
            raise ValueError(f"{name} cannot be converted to an array: {exc}") from None
        if arr.dtype == object:
            raise ValueError(f"{name} must be numeric, got an array of Python objects")
        t = torch.from_numpy(np.ascontiguousarray(arr)) if arr.dtype.kind in "biuf" else arr
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be numeric, got dtype {t.dtype}")
    if dtype is not None:
        t = t.to(device=device, dtype=dtype)
    else:
        t = t.to(device=device)
    return t


def check_X(X, name: str, device, dtype, d: int | None = None) -> torch.Tensor:
    """X as a finite (n, d) tensor of ``dtype``; ValueError naming ``name`` otherwise."""
    if X is None:
        raise ValueError(f"{name} is required, got None")
    t = as_tensor(X, name, device)
    if t.dim() != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, n_features), got shape {tuple(t.shape)}")
    if t.shape[0] == 0:
        raise ValueError(f"{name} is empty: it must have at least one sample, got shape {tuple(t.shape)}")
    if t.shape[1] == 0:
        raise ValueError(f"{name} must have at least one feature, got shape {tuple(t.shape)}")
    if d is not None and t.shape[1] != d:
        raise ValueError(f"{name} has {t.shape[1]} features but the model was fitted with {d}")
    if not (t.dtype.is_floating_point or t.dtype in (torch.bool, torch.uint8, torch.int8, torch.int16,
                                                     torch.int32, torch.int64)):
        raise ValueError(f"{name} must be numeric, got dtype {t.dtype}")
    t = t.to(dtype).contiguous()
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or infinity")
    return t


def check_y(y, name: str, n: int) -> np.ndarray | torch.Tensor:
    """Check y's length and dimensionality; returns it as a tensor (CPU) or numpy labels."""
    if y is None:
        raise ValueError(f"{name} is required, got None")
    if isinstance(y, torch.Tensor):
        t = y.detach().cpu()
    else:
        t = np.asarray(y)
    if t.ndim not in (1, 2):
        raise ValueError(f"{name} must be 1-D (n_samples,) or 2-D (n_samples, n_outputs), got shape {tuple(t.shape)}")
    if t.shape[0] != n:
        raise ValueError(f"{name} has {t.shape[0]} rows but X has {n}: they must have the same number of samples")
    if t.ndim == 2 and t.shape[1] == 0:
        raise ValueError(f"{name} has no outputs (shape {tuple(t.shape)})")
    return t


def is_classification_target(y) -> bool:
    """True for 1-D integer, boolean or string labels (sklearn's "auto" rule)."""
    if y.ndim != 1:
        return False
    if isinstance(y, torch.Tensor):
        return not y.dtype.is_floating_point and not y.dtype.is_complex
    return y.dtype.kind in "biuOSU"


def encode_targets(y, task: str, device, dtype):
    """Targets as an (n, c) tensor.

    Returns ``(Y, classes, single_output)``: for classification ``Y`` is one-vs-all 0/1 and
    ``classes`` the sorted labels (numpy); for regression ``classes`` is None.
    """
    if task not in ("auto", "classification", "regression"):
        raise ValueError(f"task must be 'auto', 'classification' or 'regression', got {task!r}")
    if task == "auto":
        task = "classification" if is_classification_target(y) else "regression"
    if task == "classification":
        if y.ndim != 1:
            raise ValueError(f"y must be 1-D labels for classification, got shape {tuple(y.shape)}")
        labels = y.numpy() if isinstance(y, torch.Tensor) else y
        if labels.dtype.kind == "f" and not np.isfinite(labels).all():
            raise ValueError("y contains NaN or infinity")
        classes, index = np.unique(labels, return_inverse=True)
        if len(classes) < 2:
            raise ValueError(f"y has a single class ({classes[0]!r}); classification needs at least 2 classes")
        Y = torch.zeros(len(labels), len(classes), dtype=dtype)
        Y[torch.arange(len(labels)), torch.from_numpy(index.reshape(-1).astype(np.int64))] = 1
        return Y.to(device), classes, False
    t = y if isinstance(y, torch.Tensor) else (torch.from_numpy(np.ascontiguousarray(y))
                                               if y.dtype.kind in "biuf" else None)
    if t is None:
        raise ValueError(f"y must be numeric for regression, got dtype {y.dtype}")
    t = t.to(dtype)
    if not bool(torch.isfinite(t).all()):
        raise ValueError("y contains NaN or infinity")
    single = t.dim() == 1
    return (t[:, None] if single else t).to(device).contiguous(), None, single


def batches(perm: torch.Tensor, size: int):
    """Consecutive slices of ``perm`` of length ``size`` (the last may be shorter)."""
    for start in range(0, perm.shape[0], size):
        yield perm[start : start + size]


def default_count(value, default: int, upper: int, name: str, warn_over: bool = True) -> int:
    """An int parameter with a default clipped to ``upper`` (warning when the user's is clipped)."""
    import warnings

    if value is None:
        return max(1, min(default, upper))
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be a positive int or None, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    if value > upper:
        if warn_over:
            warnings.warn(f"{name}={value} is larger than {upper}; using {upper}", UserWarning, stacklevel=4)
        return int(upper)
    return int(value)


class Progress:
    """A one-line progress display on stderr, only when stderr is a terminal."""

    def __init__(self, total: int, label: str, enabled: bool):
        self.total, self.label = total, label
        self.enabled = enabled and sys.stderr.isatty()
        self.start = time.perf_counter()
        self._last = 0.0

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if now - self._last < 0.2 and done < self.total:
            return
        self._last = now
        frac = done / max(1, self.total)
        bar = "#" * int(20 * frac)
        sys.stderr.write(f"\r{self.label} [{bar:20s}] {done}/{self.total} {now - self.start:6.1f} s")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\r" + " " * 70 + "\r")
            sys.stderr.flush()


def finite_or_nan(x: float) -> float:
    return float(x) if math.isfinite(x) else float("nan")
