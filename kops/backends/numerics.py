"""Input preparation shared by the backends (one definition of the numerics conventions)."""
from __future__ import annotations

import torch

__all__ = ["same_points", "centering_shift"]


def same_points(x: torch.Tensor, z: torch.Tensor) -> bool:
    """Whether x and z are views of the same memory with the same layout (x is z)."""
    return (
        x.shape == z.shape
        and x.stride() == z.stride()
        and x.data_ptr() == z.data_ptr()
        and x.dtype == z.dtype
    )


def centering_shift(z: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The mean of the finite entries of z per feature: the shift applied to x and z.

    Any shift leaves distances unchanged; the mean makes the GEMM trick's norms small. Non-
    finite entries are left out so that they cannot spread to the other rows' results.
    """
    zf = z.to(dtype)
    return torch.where(torch.isfinite(zf), zf, torch.zeros((), dtype=dtype, device=z.device)).mean(0)
