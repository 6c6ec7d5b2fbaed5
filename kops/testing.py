"""The float64 reference and the tolerance table shared by the tests and the benchmarks.

The reference forms distances by direct differences in float64 (no GEMM trick, no
cancellation), in row chunks so that even n = m = 1025, d = 784 stays small in memory.

Errors are measured element-wise relative to ``K @ |v|`` (all kops kernels are >= 0), i.e.
relative to the sum of the magnitudes that enter each output, which is what a rounding
analysis of a kernel product bounds; a floor of 64 x the smallest normal number of the
output dtype stops underflowed outputs from counting as errors.
"""
from __future__ import annotations

import torch

from .kernels import resolve_kernel

__all__ = [
    "reference_kernel_matrix",
    "reference_kmv",
    "reference_kmv_grads",
    "kmv_error",
    "tolerance",
    "assert_kmv_close",
    "random_problem",
]

#: error allowed by the output dtype (ieee mode), relative to K @ |v|
DTYPE_TOLERANCE = {
    torch.float64: 1e-11,
    torch.float32: 1e-5,
    torch.float16: 2e-3,
    torch.bfloat16: 1e-2,
}
#: error added by a reduced-precision mode, relative to K @ |v|
PRECISION_TOLERANCE = {"ieee": 0.0, "tf32": 1e-2, "bf16": 3e-2}
_CHUNK_ELEMENTS = 2**23  # float64 elements per chunk of differences (64 MiB)


def tolerance(dtype: torch.dtype, precision: str = "ieee") -> float:
    """The allowed :func:`kmv_error` for a dtype and precision mode."""
    return DTYPE_TOLERANCE[dtype] + PRECISION_TOLERANCE[precision]


def _chunks(n: int, m: int, d: int):
    step = max(1, _CHUNK_ELEMENTS // max(1, m * d))
    return range(0, n, step), step


def _sqdist64(x, z):
    """Exact-as-float64 squared distances (n, m) by direct differences, chunked over rows."""
    x64, z64 = x.detach().to(torch.float64), z.detach().to(torch.float64)
    out = torch.empty(x64.shape[0], z64.shape[0], dtype=torch.float64, device=x.device)
    starts, step = _chunks(x64.shape[0], z64.shape[0], x64.shape[1])
    for i in starts:
        out[i : i + step] = (x64[i : i + step, None, :] - z64[None, :, :]).square_().sum(-1)
    return out


def reference_kernel_matrix(x, z, kernel, bandwidth=None) -> torch.Tensor:
    """K(x, z) in float64 by direct differences."""
    spec = resolve_kernel(kernel, bandwidth)
    return spec.profile(_sqdist64(x, z).mul_(spec.scale**2))


def reference_kmv(x, z, v, kernel, bandwidth=None) -> torch.Tensor:
    """K(x, z) @ v in float64; same shape as v's columns ((n,) or (n, c))."""
    return reference_kernel_matrix(x, z, kernel, bandwidth) @ v.detach().to(torch.float64)


def reference_kmv_grads(x, z, v, grad_out, kernel, bandwidth=None):
    """Gradients of <grad_out, K(x, z) v> with respect to (x, z, v), in float64.

    At coincident points the Laplacian's derivative is taken as 0 (the symmetric subgradient).
    """
    spec = resolve_kernel(kernel, bandwidth)
    x64, z64 = x.detach().double() * spec.scale, z.detach().double() * spec.scale
    v64, g64 = v.detach().double(), grad_out.detach().double()
    if v64.dim() == 1:
        v64, g64 = v64[:, None], g64[:, None]
    u = _sqdist64(x64, z64)
    k = spec.profile(u.clone())
    q = spec.profile_derivative(u) * (g64 @ v64.T)
    gx = 2 * spec.scale * (q.sum(1, keepdim=True) * x64 - q @ z64)
    gz = 2 * spec.scale * (q.sum(0)[:, None] * z64 - q.T @ x64)
    gv = k.T @ g64
    return gx, gz, gv.reshape(v.shape)


def kmv_error(out, x, z, v, kernel, bandwidth=None) -> float:
    """max |out - ref| / (K @ |v| + floor) over all entries (see the module docstring)."""
    spec = resolve_kernel(kernel, bandwidth)
    k = reference_kernel_matrix(x, z, spec)
    v64 = v.detach().to(torch.float64)
    ref, scale = k @ v64, k @ v64.abs()
    floor = 64 * torch.finfo(out.dtype).tiny
    err = (out.detach().to(torch.float64) - ref).abs() / (scale + floor)
    if err.numel() == 0:
        return 0.0
    return float(err.max()) if not torch.isnan(err).any() else float("nan")


def assert_kmv_close(out, x, z, v, kernel, bandwidth=None, precision="ieee", factor=1.0):
    """Assert that ``out`` is K(x, z) @ v within the tolerance table (times ``factor``)."""
    err = kmv_error(out, x, z, v, kernel, bandwidth)
    tol = factor * tolerance(out.dtype, precision)
    assert err <= tol, (
        f"kmv error {err:.3e} > tolerance {tol:.1e} (dtype {out.dtype}, precision {precision}, "
        f"n={x.shape[0]}, m={z.shape[0]}, d={x.shape[1]})"
    )


def random_problem(n, m, d, c=None, *, dtype=torch.float32, device="cpu", generator=None,
                   offset=0.0):
    """Random x (n, d), z (m, d), v (m, c) (or (m,) when c is None) and a bandwidth ~ sqrt(d).

    The bandwidth makes typical scaled squared distances O(1), so K is neither ~0 nor ~1.
    ``offset`` shifts x and z away from the origin (stresses the GEMM trick).
    """
    g = generator if generator is not None else torch.Generator().manual_seed(torch.seed() % 2**63)

    def draw(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    x = draw(n, d) + offset
    z = draw(m, d) + offset
    v = draw(m) if c is None else draw(m, c)
    bandwidth = float(d) ** 0.5
    return (x.to(dtype).to(device), z.to(dtype).to(device), v.to(dtype).to(device), bandwidth)
