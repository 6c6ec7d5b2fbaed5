"""The interface every kernel-product backend implements.

A backend computes, for validated inputs x (n, d), z (m, d), v (m, c) of one floating dtype
on one device (any strides) and a resolved :class:`kops.kernels.Kernel`:

- ``kmv(x, z, v, kernel, precision, out, alpha)``: ``out += alpha * K(x, z) @ v`` where
  ``out`` is a contiguous (n, c) tensor in the accumulation dtype (float32, or float64 for
  float64 inputs);
- ``kmv_grad_xz(x, z, v, grad_out, kernel, precision)``: the gradients of
  ``<grad_out, K(x, z) @ v>`` with respect to x and z, in the accumulation dtype;
- ``kernel_matrix(x, z, kernel, precision)``: K(x, z) in the accumulation dtype.

The op layer (kops/ops.py) handles validation, 1-D v, empty sizes and output dtypes, so a
backend only sees n, m, c, d >= 1.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Case:
    """What the dispatcher knows about a call when it picks a backend."""

    op: str  # "kmv", "kmv_grad_xz" or "kernel_matrix"
    device: torch.device
    dtype: torch.dtype
    n: int
    m: int
    d: int
    c: int
    kernel: str
    precision: str


class Backend:
    """Base class of the backends; subclasses override what they implement."""

    name: str = ""
    #: one line for ``kops info``
    description: str = ""

    def unavailable_reason(self) -> str | None:
        """None when the backend can run on this installation, else why not."""
        return None

    def unsupported_reason(self, case: Case) -> str | None:
        """None when the backend can compute ``case``, else why not."""
        return None

    def preferred(self, case: Case) -> bool:
        """Whether "auto" should pick this backend for ``case`` (it is supported and fast)."""
        return True

    def kmv(self, x, z, v, kernel, precision, out, alpha) -> None:
        raise NotImplementedError

    def kmv_grad_xz(self, x, z, v, grad_out, kernel, precision):
        raise NotImplementedError

    def kernel_matrix(self, x, z, kernel, precision):
        raise NotImplementedError
