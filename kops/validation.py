"""Argument checks shared by the ops (clear errors that name the offending argument)."""
from __future__ import annotations

import torch

from .kernels import KERNELS, resolve_kernel
from .precision import check_precision

__all__ = ["check_matrix", "check_kmv_args", "check_finite_inputs"]

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_matrix(t, name: str, ndim=(2,)) -> torch.Tensor:
    """Check that ``t`` is a floating tensor with one of the allowed ``ndim``."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() not in ndim:
        want = " or ".join(f"{k}-D" for k in ndim)
        raise ValueError(f"{name} must be {want}, got shape {tuple(t.shape)}")
    if t.dtype not in _FLOAT_DTYPES:
        raise TypeError(
            f"{name} must have a floating dtype (float16, bfloat16, float32, float64), got {t.dtype}"
        )
    return t


def check_kmv_args(x, z, v, kernel: str, bandwidth: float, precision: str):
    """Validate the arguments of the kernel-product ops; returns the resolved Kernel.

    ``v`` may be ``None`` (kernel_matrix). Shapes: x (n, d), z (m, d), v (m,) or (m, c).
    """
    check_matrix(x, "x")
    check_matrix(z, "z")
    if x.shape[1] != z.shape[1]:
        raise ValueError(
            f"x and z must have the same number of features d, got x {tuple(x.shape)} and z {tuple(z.shape)}"
        )
    if x.shape[1] == 0:
        raise ValueError("x and z must have at least one feature (d >= 1)")
    tensors = {"x": x, "z": z}
    if v is not None:
        check_matrix(v, "v", ndim=(1, 2))
        if v.shape[0] != z.shape[0]:
            raise ValueError(
                f"v must have as many rows as z (m = {z.shape[0]}), got v of shape {tuple(v.shape)}"
            )
        tensors["v"] = v
    for name, t in tensors.items():
        if t.device != x.device:
            raise ValueError(f"{name} is on {t.device} but x is on {x.device}; move them to one device")
        if t.dtype != x.dtype:
            raise TypeError(f"{name} has dtype {t.dtype} but x has {x.dtype}; use one dtype")
    if not isinstance(kernel, str):
        raise TypeError(f"kernel must be a name ({', '.join(sorted(KERNELS))}), got {type(kernel).__name__}")
    check_precision(precision)
    return resolve_kernel(kernel, bandwidth)


def check_finite_inputs(**tensors) -> None:
    """Raise ValueError naming the first tensor that holds NaN or infinity."""
    for name, t in tensors.items():
        if t is not None and t.numel() and not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name} contains NaN or infinite values")
