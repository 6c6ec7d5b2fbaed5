"""The pure-torch reference backend (CPU and CUDA).

Blocks of K are formed one at a time, each within the memory budget
(:func:`kops.config.get_memory_budget`), so K(x, z) is never materialised for large n, m.

Numerics: the inputs are centred (on the mean of z) and divided by the kernel's length
before any distance is computed, so the GEMM trick ``|x|^2 + |z|^2 - 2 x.z`` subtracts O(1)
numbers; squared distances are clamped at 0; when x and z are the same tensor the diagonal
is set to exactly 0; for d <= DIRECT_MAX_D distances are formed by direct differences,
which cannot cancel. The tf32 / bf16 precision modes are emulated by rounding the operands
of both matrix products (see kops.precision), and the products themselves run in exact
float32 / float64 (TF32 is switched off for them on CUDA).
"""
from __future__ import annotations

import contextlib
import math

import torch

from ..config import get_memory_budget
from ..precision import PRECISIONS, accumulation_dtype, round_operand
from .numerics import centering_shift, same_points
from .registry import OPS, Backend, Capabilities

DIRECT_MAX_D = 4
# Temporaries per kernel-block element: the distance block and up to two profile temporaries.
_BLOCK_BUFFERS = 3
# On CPU, blocks beyond a few tens of MB stream through memory between the distance, exp and
# value passes; capping them keeps each pass closer to cache (measured: 64 MiB blocks ~1.4x
# faster than 1 GiB ones at n = m = 20000, d = 64). On CUDA larger blocks only help.
_CPU_BLOCK_BYTES = 64 * 2**20


def block_budget(device: torch.device) -> int:
    """Bytes of temporaries one block may use on ``device``."""
    budget = get_memory_budget(device)
    return min(budget, _CPU_BLOCK_BYTES) if device.type == "cpu" else budget


@contextlib.contextmanager
def exact_matmul(device: torch.device):
    """Switch TF32 off for float32 matrix products on CUDA inside the block."""
    if device.type != "cuda":
        yield
        return
    matmul = torch.backends.cuda.matmul
    previous = matmul.allow_tf32
    matmul.allow_tf32 = False
    try:
        yield
    finally:
        matmul.allow_tf32 = previous


def block_ranges(n: int, m: int, bytes_per_pair: int, budget: int):
    """Yield (i0, i1, j0, j1) blocks covering n x m with at most budget / bytes_per_pair pairs."""
    pairs = max(1, budget // max(1, bytes_per_pair))
    bm = min(m, max(1, math.isqrt(pairs)))
    bn = min(n, max(1, pairs // bm))
    if bn == n:  # few rows: spend the rest of the budget on columns
        bm = min(m, max(1, pairs // bn))
    for i0 in range(0, n, bn):
        for j0 in range(0, m, bm):
            yield i0, min(i0 + bn, n), j0, min(j0 + bm, m)


class _Prepared:
    """Centred, scaled (and precision-rounded) copies of x and z with their squared norms."""

    def __init__(self, x, z, kernel, precision):
        self.dtype = accumulation_dtype(x.dtype)
        self.same = same_points(x, z)
        self.direct = x.shape[1] <= DIRECT_MAX_D
        center = centering_shift(z, self.dtype)
        self.xs = round_operand((x.to(self.dtype) - center).mul_(kernel.scale), precision)
        self.zs = self.xs if self.same else round_operand((z.to(self.dtype) - center).mul_(kernel.scale), precision)
        if not self.direct:
            self.xn = self.xs.square().sum(1)
            self.zn = self.xn if self.same else self.zs.square().sum(1)

    def bytes_per_pair(self) -> int:
        size = torch.empty((), dtype=self.dtype).element_size()
        return size * (_BLOCK_BUFFERS + (self.xs.shape[1] if self.direct else 0))

    def sqdist(self, i0, i1, j0, j1) -> torch.Tensor:
        """Scaled squared distances of rows i0:i1 of x to rows j0:j1 of z (a new block)."""
        xi, zj = self.xs[i0:i1], self.zs[j0:j1]
        if self.direct:
            u = (xi.unsqueeze(1) - zj.unsqueeze(0)).square_().sum(-1)
        else:
            u = torch.addmm(self.zn[j0:j1].unsqueeze(0), xi, zj.T, alpha=-2.0)
            u += self.xn[i0:i1].unsqueeze(1)
            u.clamp_min_(0.0)
        if self.same and i0 < j1 and j0 < i1:
            u.diagonal(i0 - j0).zero_()
        return u

    def noise_floor(self, i0, i1, j0, j1) -> torch.Tensor | None:
        """Squared distances below this are indistinguishable from 0 in the GEMM trick."""
        if self.direct:
            return None
        eps = torch.finfo(self.dtype).eps
        return (self.xn[i0:i1].unsqueeze(1) + self.zn[j0:j1].unsqueeze(0)).mul_(16 * eps)


class TorchBackend(Backend):
    name = "torch"
    description = "pure torch reference: blocked GEMM-trick / direct differences within the memory budget"
    capabilities = Capabilities(
        devices=("cpu", "cuda"),
        ops=OPS,
        dtypes=(torch.float16, torch.bfloat16, torch.float32, torch.float64),
        precisions=PRECISIONS,
    )
    # the reference closes every automatic order
    auto_rank = {"cpu": 100, "cuda": 100}

    def kmv(self, x, z, v, kernel, precision, out, alpha):
        prep = _Prepared(x, z, kernel, precision)
        vr = round_operand(v.to(prep.dtype), precision)
        budget = block_budget(x.device)
        with exact_matmul(x.device):
            for i0, i1, j0, j1 in block_ranges(x.shape[0], z.shape[0], prep.bytes_per_pair(), budget):
                k = round_operand(kernel.profile(prep.sqdist(i0, i1, j0, j1)), precision)
                out[i0:i1].addmm_(k, vr[j0:j1], alpha=alpha)
                del k  # free this block before the next one is formed

    def kmv_grad_xz(self, x, z, v, grad_out, kernel, precision):
        prep = _Prepared(x, z, kernel, precision)
        g, vv = grad_out.to(prep.dtype), v.to(prep.dtype)
        gx = torch.zeros(x.shape, dtype=prep.dtype, device=x.device)
        gz = torch.zeros(z.shape, dtype=prep.dtype, device=x.device)
        budget = block_budget(x.device)
        with exact_matmul(x.device):
            for i0, i1, j0, j1 in block_ranges(x.shape[0], z.shape[0], prep.bytes_per_pair() * 2, budget):
                u = prep.sqdist(i0, i1, j0, j1)
                floor = None if kernel.smooth_at_zero else prep.noise_floor(i0, i1, j0, j1)
                if floor is not None:
                    u = torch.where(u <= floor, torch.zeros_like(u), u)
                # q_ij = f'(u_ij) <grad_out_i, v_j>; dK_ij/dxs_i = 2 f'(u_ij) (xs_i - zs_j)
                q = kernel.profile_derivative(u).mul_(g[i0:i1] @ vv[j0:j1].T)
                xi, zj = prep.xs[i0:i1], prep.zs[j0:j1]
                gx[i0:i1] += q.sum(1, keepdim=True) * xi - q @ zj
                gz[j0:j1] += q.sum(0).unsqueeze(1) * zj - q.T @ xi
        factor = 2.0 * kernel.scale
        return gx.mul_(factor), gz.mul_(factor)

    def kernel_matrix(self, x, z, kernel, precision):
        prep = _Prepared(x, z, kernel, precision)
        out = torch.empty(x.shape[0], z.shape[0], dtype=prep.dtype, device=x.device)
        budget = block_budget(x.device)
        with exact_matmul(x.device):
            for i0, i1, j0, j1 in block_ranges(x.shape[0], z.shape[0], prep.bytes_per_pair(), budget):
                out[i0:i1, j0:j1] = kernel.profile(prep.sqdist(i0, i1, j0, j1))
        return out
