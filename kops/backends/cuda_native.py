"""The native CUDA backend: hand-written, register-blocked kernels (csrc/cuda).

The C++ side (private ops ``torch.ops.kops._cuda_kmv`` and ``torch.ops.kops._cuda_kmv_grad``,
registered for the CUDA dispatch key by csrc/cuda/kmv_binding.cpp) is the exact ("ieee") path
for small and moderate d:

- distances by direct differences of the raw inputs, ``scale^2 * sum_k (x_ik - z_jk)^2``, so
  no cancellation can occur (the GEMM trick is never used) and ``x_i == z_j`` gives exactly 0;
- each thread keeps several rows of x (all d features, padded to a compiled bucket: D in
  {3, 4, 8, 16, 32, 64} for float32, {4, 16, 64} for float64) in registers and streams tiles
  of z and v through shared memory, so every z element it loads serves several rows (2 to 8
  rows per thread, fewer for larger D and wide v); the reduction over z is fused;
- float32 exponentials are the ``exp2f`` instruction (``ex2.approx.ftz``, 2 ulp) with log2(e)
  folded into the per-pair constant, square roots ``a * rsqrt(a)`` (error analysis in
  csrc/cuda/kmv_kernels.cuh: well inside the 1e-5 ieee tolerance); float64 uses ``exp``.

Supported: float32 and float64 CUDA tensors, every kernel of the kernel table, precision "ieee",
``kmv`` / ``kmv_accumulate`` and ``kmv_grad_xz`` for d <= 64 (any number of columns). The
gradient kernel itself covers d <= 32 and c <= 16; beyond that ``kmv_grad_xz`` runs the torch
reference's blocked computation (so that ``backend="cuda"`` forward passes are always
differentiable) and "auto" does not prefer this backend for it. Everything else is reported by
:meth:`CudaBackend.unsupported_reason`, and "auto" then falls back to the next backend
(Triton, then torch).

When the row blocks alone cannot fill the GPU, the z range is split over more blocks; their
partial sums go to a workspace (from torch's caching allocator, at most 256 MiB) and are
added in a fixed order, so results are deterministic run to run (no atomics).
"""
from __future__ import annotations

import torch

from .. import _native
from .registry import Backend, Capabilities, Case
from .torch_reference import TorchBackend

__all__ = ["CudaBackend"]

#: largest d of the register-blocked kernel product (kMaxDim in csrc/cuda/kmv_launch.h)
MAX_D = 64
#: limits of the gradient kernel (kMaxGradDim, kMaxGradCols)
MAX_GRAD_D = 32
MAX_GRAD_C = 16
#: "auto" prefers this backend up to this d. At small d the exponential unit and the
#: direct differences bound every backend and register blocking wins; at large d a tensor-core
#: distance product (Triton) should win. The crossover is a guess until it is measured on a
#: GPU (bench/bench_kmv.py): tune this threshold there.
PREFERRED_MAX_D = 64


def _native_grad(d: int, c: int) -> bool:
    """Whether the native gradient kernel covers d features and c columns."""
    return d <= MAX_GRAD_D and c <= MAX_GRAD_C


class CudaBackend(Backend):
    """Backend "cuda": the hand-written CUDA kernels of csrc/cuda."""

    name = "cuda"
    description = (
        "hand-written CUDA kernels: direct differences, rows of x in registers, z/v tiles in "
        "shared memory (ieee, fp32/fp64, d <= 64)"
    )
    # half precision is the Triton backend's; tf32 / bf16 need tensor cores (Triton)
    capabilities = Capabilities(
        devices=("cuda",),
        ops=("kmv", "kmv_grad_xz"),
        dtypes=(torch.float32, torch.float64),
        precisions=("ieee",),
        max_d=MAX_D,
    )
    auto_rank = {"cuda": 0}

    def unavailable_reason(self) -> str | None:
        """None when the extension has the CUDA kernels and a CUDA device is present.

        Returns
        -------
        str or None
            Why the backend cannot run in this installation: the extension is missing, it
            was built without CUDA (with the reason recorded at build time), or no CUDA
            device is visible.
        """
        if not _native.extension_loaded():
            return _native.EXTENSION_ERROR or "the compiled extension kops._C is not loaded"
        info = _native.BUILD_INFO
        if not info.get("cuda", False):
            reason = info.get("cuda_reason") or "unknown reason"
            return f"kops._C was built without the CUDA backend ({reason})"
        if not hasattr(torch.ops.kops, "_cuda_kmv"):
            return "kops._C was built with CUDA but does not register kops::_cuda_kmv"
        if not torch.cuda.is_available():
            return "no CUDA device is available"
        return None

    def preferred(self, case: Case) -> bool:
        """Whether "auto" should use this backend: supported, d <= PREFERRED_MAX_D, and for
        gradients within the native gradient kernel's limits."""
        if self.unsupported_reason(case) is not None or case.d > PREFERRED_MAX_D:
            return False
        return case.op != "kmv_grad_xz" or _native_grad(case.d, case.c)

    def kmv(self, x, z, v, kernel, precision, out, alpha) -> None:
        """``out += alpha * K(x, z) @ v``; out is contiguous in x's dtype (float32/64)."""
        torch.ops.kops._cuda_kmv(out, x, z, v, kernel.code, kernel.scale, float(alpha))

    def kmv_grad_xz(self, x, z, v, grad_out, kernel, precision):
        """Gradients of ``<grad_out, K(x, z) @ v>`` with respect to x and z.

        The gradient kernel computes ``gx_i += 2 scale^2 sum_j f'(u_ij) <g_i, v_j> (x_i - z_j)``;
        the z gradient is the same sum with the roles of (x, grad_out) and (z, v) swapped.
        Beyond its limits (d > MAX_GRAD_D or c > MAX_GRAD_C) the torch reference computes both.
        """
        if not _native_grad(x.shape[1], v.shape[1]):
            return TorchBackend().kmv_grad_xz(x, z, v, grad_out, kernel, precision)
        code = kernel.code
        gx = torch.zeros(x.shape, dtype=x.dtype, device=x.device)
        gz = torch.zeros(z.shape, dtype=z.dtype, device=z.device)
        torch.ops.kops._cuda_kmv_grad(gx, x, z, v, grad_out, code, kernel.scale)
        torch.ops.kops._cuda_kmv_grad(gz, z, x, grad_out, v, code, kernel.scale)
        return gx, gz

