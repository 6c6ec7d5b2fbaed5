"""Input conversion and validation shared by the solvers: arrays, targets, dtypes, counts.

Every error is a ValueError that names the argument and says what is accepted.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch

from ..kernels import Kernel, resolve_kernel

__all__ = [
    "as_tensor",
    "check_X",
    "check_y",
    "encode_targets",
    "resolve_device",
    "resolve_dtype",
    "kernel_of",
    "default_count",
    "check_epochs",
    "check_ridge",
    "check_fraction",
    "check_sample_weight",
]

_DTYPES = {"float32": torch.float32, "float64": torch.float64}
# Low precision is refused (see resolve_dtype): named here for the error message.
_LOW = {"float16": torch.float16, "bfloat16": torch.bfloat16, "half": torch.float16}


def resolve_device(device) -> torch.device:
    """``None`` -> the first CUDA device when present, else the CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be a torch device or a name such as 'cpu' or 'cuda', got {device!r}") from None


def resolve_dtype(dtype) -> torch.dtype:
    """The training dtype: float32 (default) or float64.

    float16 and bfloat16 are refused with a ValueError: EigenPro's updates add steps of
    relative size ~1e-3 to weights of size ~1, below half precision's resolution, so a
    half-precision fit silently stalls at chance accuracy. Low-precision *products* are
    available with float32 training through the ops' ``precision`` argument.
    """
    if dtype is None:
        return torch.float32
    name = dtype if isinstance(dtype, str) else None
    if isinstance(dtype, torch.dtype):
        name = str(dtype).replace("torch.", "")
    elif name is None:
        try:  # numpy dtypes
            name = np.dtype(dtype).name
        except TypeError:
            name = None
    if name in _LOW:
        raise ValueError(f"dtype={name} is not supported for training: half-precision weights cannot hold "
                         "EigenPro's small updates and the fit would stall silently. Use dtype='float32' "
                         "(or 'float64')")
    if name not in _DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(_DTYPES)}, got {dtype!r}")
    return _DTYPES[name]


def kernel_of(kernel, bandwidth) -> Kernel:
    """A Kernel object from an object or a name plus a bandwidth (errors name the argument)."""
    return resolve_kernel(kernel, bandwidth)


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
        if arr.dtype.kind in "biuf":
            arr = np.ascontiguousarray(arr)
            t = torch.from_numpy(arr if arr.flags.writeable else arr.copy())  # torch needs writeable memory
        else:
            t = arr
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


def default_count(value, default: int, upper: int, name: str, warn_over: bool = True) -> int:
    """An int parameter with a default clipped to ``upper`` (warning when the user's is clipped)."""

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




def check_epochs(epochs) -> int:
    """``epochs`` as an int >= 0."""
    if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 0:
        raise ValueError(f"epochs must be an int >= 0, got {epochs!r}")
    return int(epochs)


def check_ridge(ridge) -> float:
    """``ridge`` as a finite float >= 0."""
    try:
        r = float(ridge)
    except (TypeError, ValueError):
        raise ValueError(f"ridge must be a number >= 0, got {ridge!r}") from None
    if not r >= 0 or r == float("inf"):
        raise ValueError(f"ridge must be a finite number >= 0, got {ridge!r}")
    return r


def check_fraction(value, name: str) -> float:
    """A float in (0, 1)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in (0, 1), got {value!r}") from None
    if not 0.0 < v < 1.0:
        raise ValueError(f"{name} must be a number in (0, 1), got {value!r}")
    return v


def check_sample_weight(sample_weight, n: int, device, dtype) -> torch.Tensor | None:
    """Sample weights as an (n,) tensor of ``dtype``, or None for None.

    ValueError naming ``sample_weight`` unless they are finite, non-negative, of length n and
    not all zero.
    """
    if sample_weight is None:
        return None
    if isinstance(sample_weight, (int, float)) and not isinstance(sample_weight, bool):
        sample_weight = np.full(n, float(sample_weight))
    w = as_tensor(sample_weight, "sample_weight", device)
    if w.dim() != 1 or w.shape[0] != n:
        raise ValueError(f"sample_weight must have shape ({n},), got {tuple(w.shape)}")
    if not w.dtype.is_floating_point:
        w = w.to(torch.float64)
    if not bool(torch.isfinite(w).all()):
        raise ValueError("sample_weight contains NaN or infinity")
    if bool((w < 0).any()):
        raise ValueError("sample_weight must be non-negative (a negative weight makes the loss non-convex)")
    if not bool((w > 0).any()):
        raise ValueError("sample_weight must have at least one positive weight, got all zeros")
    return w.to(dtype).contiguous()
