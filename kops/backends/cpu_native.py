"""The native CPU backend: fused, cache-blocked, multi-threaded C++ kernels (csrc/cpu).

The C++ side (private ops ``torch.ops.kops._cpu_kmv_accumulate``, ``_cpu_kmv_grad_xz`` and
``_cpu_kernel_matrix``) uses the torch reference's numerics: inputs centred on the mean of
the finite entries of z and multiplied by the kernel's scale, squared distances by the GEMM
trick (clamped at 0) or, for d <= 4, by direct differences, exact 0 on the diagonal when x
is z, and the same noise-floor rule for the Laplacian's gradient. It never forms K beyond a
tile of about 48 x 256 values (192 x 256 from d = 256): a register-blocked AVX-512 or
AVX2/FMA microkernel computes the distances of a tile and applies the kernel with a
vectorised exp while they are in registers, and the tile is multiplied with V before the
next one is formed. The widest ISA
the CPU has is chosen at run time; CPUs without AVX2/FMA get a portable build of the same
kernels (``torch.ops.kops._cpu_isa()`` says which is used; the environment variable
``KOPS_CPU_ISA=avx2`` or ``portable`` forces a narrower one).

Supported: float32 and float64 (float16 / bfloat16 are upcast to float32, as the reference
does), the four kops kernels, ``kmv`` / ``kmv_accumulate``, ``kmv_grad_xz`` and
``kernel_matrix``, and the three precision modes: "ieee" exact, "tf32" / "bf16" emulated as
in the reference by rounding the operands of the products (scaled x and z, the kernel
values, V) to 10 / 7 mantissa bits.
"""
from __future__ import annotations

import torch

from .. import _native
from ..dispatch import register_backend
from ..precision import accumulation_dtype
from .base import Backend, Case
from .cpu_crossover import native_preferred
from .numerics import same_points

__all__ = ["CpuNativeBackend"]

_KERNELS = ("gaussian", "laplacian", "matern32", "matern52")
_OPS = ("kmv", "kmv_grad_xz", "kernel_matrix")
_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
_PRECISIONS = ("ieee", "tf32", "bf16")

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

    def unavailable_reason(self) -> str | None:
        """None when the compiled extension with the native CPU kernels is loaded."""
        if not _native.extension_loaded():
            return _native.EXTENSION_ERROR or "the compiled extension kops._C is not loaded"
        if not hasattr(torch.ops.kops, "_cpu_kmv_accumulate"):
            return "the compiled extension kops._C was built without the native CPU kernels"
        return None

    def unsupported_reason(self, case: Case) -> str | None:
        """None when ``case`` can run here, else a sentence saying why not."""
        if case.device.type != "cpu":
            return f"the native CPU backend runs on CPU tensors only, got a {case.device.type} tensor"
        if case.op not in _OPS:
            return f"the native CPU backend implements {', '.join(_OPS)}, not {case.op}"
        if case.dtype not in _DTYPES:
            return f"the native CPU backend does not support dtype {case.dtype}"
        if case.kernel not in _KERNELS:
            return f"the native CPU backend does not implement the {case.kernel!r} kernel"
        if case.precision not in _PRECISIONS:
            return f"the native CPU backend does not implement precision {case.precision!r}"
        return None

    def preferred(self, case: Case) -> bool:
        """Whether "auto" should use this backend for ``case``: the rule measured on this
        machine by :mod:`kops.backends.cpu_crossover`."""
        if self.unsupported_reason(case) is not None:
            return False
        return native_preferred(case)

    def isa(self) -> str:
        """The instruction set the kernels use here: "avx512", "avx2" or "portable"."""
        return str(torch.ops.kops._cpu_isa())

    def kmv(self, x, z, v, kernel, precision, out, alpha) -> None:
        """``out += alpha * K(x, z) @ v`` (out contiguous, accumulation dtype)."""
        x, z, v = _upcast(x, z, v)
        torch.ops.kops._cpu_kmv_accumulate(out, x, z, v, kernel.name, kernel.bandwidth, float(alpha), precision)

    def kernel_matrix(self, x, z, kernel, precision):
        """K(x, z) in the accumulation dtype."""
        x, z = _upcast(x, z)
        return torch.ops.kops._cpu_kernel_matrix(x, z, kernel.name, kernel.bandwidth, precision)

    def kmv_grad_xz(self, x, z, v, grad_out, kernel, precision):
        """Gradients of ``<grad_out, K(x, z) @ v>`` with respect to x and z."""
        x, z, v, grad_out = _upcast(x, z, v, grad_out)
        return torch.ops.kops._cpu_kmv_grad_xz(x, z, v, grad_out, kernel.name, kernel.bandwidth, precision)


register_backend(CpuNativeBackend())
