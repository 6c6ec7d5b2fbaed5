"""When "auto" prefers the native CPU kernels over the torch reference on a CPU tensor.

One function, :func:`native_preferred`, reads the call's case record (fields ``op, device,
dtype, n, m, d, c, kernel, precision``) and answers whether the native CPU backend should
take it. It is only asked about cases the native backend supports. The rule lives in its own
module so that it can be re-measured and replaced without touching the backend.
"""
from __future__ import annotations

import torch

__all__ = ["native_preferred", "PORTABLE_MAX_D"]

#: Largest d at which the portable (non-AVX2) kernels are preferred over the torch backend
#: (measured on the loaded development machine, n = m = 3000: faster up to d = 32, about
#: even at d = 64, slower at d = 128).
PORTABLE_MAX_D = 32


def _isa() -> str:
    return str(torch.ops.kops._cpu_isa())


def native_preferred(case) -> bool:
    """Whether the native CPU kernels should compute ``case`` instead of the torch reference.

    With the AVX2 kernels: always (measured faster than the torch backend at every size
    tried, see bench/results/cpu_*.json). The portable build (no AVX2/FMA) is about 6x slower
    at d = 64, level with the torch backend's BLAS there, so it is preferred only at small d,
    where the exponential dominates.
    """
    return _isa() == "avx2" or case.d <= PORTABLE_MAX_D
