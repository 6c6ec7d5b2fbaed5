"""The native CPU backend: fused, cache-blocked, multi-threaded C++ kernels (csrc/cpu).

The C++ side (private ops ``torch.ops.kops._cpu_kmv_accumulate``, ``_cpu_kmv_grad_xz`` and
``_cpu_kernel_matrix``) uses the torch reference's numerics: inputs centred on the mean of
the finite entries of z and multiplied by the kernel's scale, squared distances by the GEMM
trick (clamped at 0) or, for d <= 4, by direct differences, exact 0 on the diagonal when x
is z, and the same noise-floor rule for the Laplacian's gradient. It never forms K beyond a
tile of about 48 x 256 values: a register-blocked AVX2/FMA microkernel computes the
distances of a tile and applies the kernel with a vectorised exp while they are in
registers, and the tile is multiplied with V before the next one is formed. CPUs without
AVX2/FMA get a portable build of the same kernels (``torch.ops.kops._cpu_isa()`` says which
is used; the environment variable ``KOPS_CPU_ISA=portable`` forces it).

Supported: float32 and float64 (float16 / bfloat16 are upcast to float32, as the reference
does), every kernel of the kernel table (passed as its code and scale), ``kmv`` / ``kmv_accumulate``, ``kmv_grad_xz`` and
``kernel_matrix``, and the three precision modes: "ieee" exact, "tf32" / "bf16" emulated as
in the reference by rounding the operands of the products (scaled x and z, the kernel
values, V) to 10 / 7 mantissa bits.
"""
from __future__ import annotations

import torch

from .. import _native
from ..precision import PRECISIONS, accumulation_dtype
from . import cpu_crossover
from .numerics import same_points
from .registry import OPS, Backend, Capabilities, Case

__all__ = ["CpuNativeBackend"]



def _upcast(x: torch.Tensor, z: torch.Tensor, *others: torch.Tensor):
    """x, z and ``others`` in the accumulation dtype; z stays x's object when x is z."""
    acc = accumulation_dtype(x.dtype)
    same = same_points(x, z)
    xa = x.to(acc)
    za = xa if same else z.to(acc)
    return (xa, za) + tuple(t.to(acc) for t in others)


class CpuNativeBackend(Backend):
    """Backend "cpu": the fused C++ kernels of csrc/cpu."""

    name = "cpu"
    description = "native C++ CPU kernels: fused cache-blocked tiles, AVX-512 / AVX2 microkernels, multi-threaded"
    # float16 / bfloat16 are upcast to float32, as the reference does
    capabilities = Capabilities(
        devices=("cpu",),
        ops=OPS,
        dtypes=(torch.float32, torch.float64, torch.float16, torch.bfloat16),
        precisions=PRECISIONS,
    )
    auto_rank = {"cpu": 0}

    def unavailable_reason(self) -> str | None:
        """None when the compiled extension with the native CPU kernels is loaded."""
        if not _native.extension_loaded():
            return _native.EXTENSION_ERROR or "the compiled extension kops._C is not loaded"
        if not hasattr(torch.ops.kops, "_cpu_kmv_accumulate"):
            return "the compiled extension kops._C was built without the native CPU kernels"
        return None

    def preferred(self, case: Case) -> bool:
        """Whether "auto" should use this backend for ``case``: supported, and the crossover
        rule of :mod:`kops.backends.cpu_crossover` says the native kernels win there."""
        if self.unsupported_reason(case) is not None:
            return False
        return cpu_crossover.native_preferred(case)

    def isa(self) -> str:
        """The instruction set the kernels use here: "avx512", "avx2" or "portable"."""
        return str(torch.ops.kops._cpu_isa())

    def kmv(self, x, z, v, kernel, precision, out, alpha) -> None:
        """``out += alpha * K(x, z) @ v`` (out contiguous, accumulation dtype)."""
        x, z, v = _upcast(x, z, v)
        torch.ops.kops._cpu_kmv_accumulate(out, x, z, v, kernel.code, kernel.scale, float(alpha), precision)

    def kernel_matrix(self, x, z, kernel, precision):
        """K(x, z) in the accumulation dtype."""
        x, z = _upcast(x, z)
        return torch.ops.kops._cpu_kernel_matrix(x, z, kernel.code, kernel.scale, precision)

    def kmv_grad_xz(self, x, z, v, grad_out, kernel, precision):
        """Gradients of ``<grad_out, K(x, z) @ v>`` with respect to x and z."""
        x, z, v, grad_out = _upcast(x, z, v, grad_out)
        return torch.ops.kops._cpu_kmv_grad_xz(x, z, v, grad_out, kernel.code, kernel.scale, precision)

