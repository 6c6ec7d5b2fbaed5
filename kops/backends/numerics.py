"""Input preparation shared by the backends (one definition of the numerics conventions)."""
from __future__ import annotations

import torch

__all__ = ["same_points", "centering_shift"]


def same_points(x: torch.Tensor, z: torch.Tensor) -> bool:
    """Whether x and z are views of the same memory with the same layout (x is z)."""
    if x is z:
        return True
    if x.shape != z.shape or x.dtype != z.dtype or x.stride() != z.stride():
        return False
    try:
        return x.data_ptr() == z.data_ptr()
    except RuntimeError:  # tensors without storage (torch.func transforms, fake tensors)
        return False


def centering_shift(z: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The mean of the finite entries of z per feature: the shift applied to x and z.

    Any shift leaves distances unchanged; the mean makes the GEMM trick's norms small. Non-
    finite entries are left out so that they cannot spread to the other rows' results.
    """
    zf = z.to(dtype)
    return torch.where(torch.isfinite(zf), zf, torch.zeros((), dtype=dtype, device=z.device)).mean(0)
