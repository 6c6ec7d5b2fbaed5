"""Derivatives of the kernel products beyond the first reverse-mode gradient, in plain torch.

The first gradient of ``kmv`` runs the fused ``kmv_grad_xz`` op (no K formed). What lies
beyond it is rarely needed at scale (Hessian-vector products, forward-mode tangents,
gradients of gradients), so it is composed here from torch operations on dense (n, m)
blocks: always differentiable, any order, at O(n m) memory (O(n m d) for d <= 4). Squared
distances are direct differences for small d and the GEMM trick on centred, scaled inputs
otherwise, with values below the trick's noise floor set to exactly 0 (as the backends do), so
coincident points give u = 0 and the profiles' values at 0 (see :func:`kops.kernels._sqrt0`)
keep every derivative finite.

Notation: xs = (x - c) * scale, zs = (z - c) * scale with c the centring shift (a constant:
distances do not depend on it), u_ij = |xs_i - zs_j|^2, K_ij = f(u_ij).
"""
from __future__ import annotations

import torch

from .backends.numerics import centering_shift, same_points
from .kernels import Kernel
from .precision import accumulation_dtype

__all__ = ["scaled", "sqdist", "kmv_grad_xz", "kmv_tangent", "kernel_matrix_tangent", "kernel_matrix_grad"]


def scaled(x: torch.Tensor, z: torch.Tensor, kernel: Kernel):
    """(xs, zs) in the accumulation dtype; zs is xs when x is z (so the diagonal is exact)."""
    acc = accumulation_dtype(x.dtype)
    center = centering_shift(z.detach(), acc)
    xs = (x.to(acc) - center) * kernel.scale
    zs = xs if same_points(x, z) else (z.to(acc) - center) * kernel.scale
    return xs, zs


#: d up to which u is formed by direct differences (an (n, m, d) temporary)
DIRECT_MAX_D = 4


def sqdist(xs: torch.Tensor, zs: torch.Tensor) -> torch.Tensor:
    """u (n, m), exactly 0 for coincident points, differentiable in xs and zs."""
    if xs.shape[1] <= DIRECT_MAX_D:
        return (xs.unsqueeze(1) - zs.unsqueeze(0)).square().sum(-1)
    xn, zn = xs.square().sum(1), zs.square().sum(1)
    u = (xn.unsqueeze(1) + zn.unsqueeze(0) - 2.0 * (xs @ zs.T)).clamp_min(0.0)
    floor = (xn.unsqueeze(1) + zn.unsqueeze(0)).detach() * (16 * torch.finfo(xs.dtype).eps)
    return torch.where(u <= floor, torch.zeros_like(u), u)


def _cols(t: torch.Tensor) -> torch.Tensor:
    return t.unsqueeze(1) if t.dim() == 1 else t


def kmv_grad_xz(x, z, v, grad_out, kernel: Kernel):
    """Gradients of ``<grad_out, K(x, z) v>`` with respect to x and z, differentiable.

    gx_i = 2 scale sum_j Q_ij (xs_i - zs_j), gz_j = 2 scale sum_i Q_ij (zs_j - xs_i) with
    Q_ij = f'(u_ij) <grad_out_i, v_j>. Shapes: x (n, d), z (m, d), v (m,) or (m, c),
    grad_out (n,) or (n, c); returns (n, d) and (m, d) in x's dtype.
    """
    xs, zs = scaled(x, z, kernel)
    acc = xs.dtype
    q = kernel.profile_derivative(sqdist(xs, zs)) * (_cols(grad_out).to(acc) @ _cols(v).to(acc).T)
    factor = 2.0 * kernel.scale
    gx = (q.sum(1, keepdim=True) * xs - q @ zs) * factor
    gz = (q.sum(0).unsqueeze(1) * zs - q.T @ xs) * factor
    return gx.to(x.dtype), gz.to(z.dtype)


def _du(xs, zs, tx, tz, kernel: Kernel):
    """The tangent of u (n, m) for tangents tx of x and tz of z (either may be None)."""
    du = None
    if tx is not None:
        txs = tx.to(xs.dtype) * kernel.scale
        du = (xs * txs).sum(1, keepdim=True) - txs @ zs.T
    if tz is not None:
        tzs = tz.to(xs.dtype) * kernel.scale
        part = (zs * tzs).sum(1).unsqueeze(0) - xs @ tzs.T
        du = part if du is None else du + part
    return None if du is None else 2.0 * du


def _dk(x, z, tx, tz, kernel: Kernel):
    xs, zs = scaled(x, z, kernel)
    du = _du(xs, zs, tx, tz, kernel)
    if du is None:
        return torch.zeros(x.shape[0], z.shape[0], dtype=xs.dtype, device=x.device)
    return kernel.profile_derivative(sqdist(xs, zs)) * du


def kernel_matrix_tangent(x, z, tx, tz, kernel: Kernel):
    """Forward-mode tangent of K(x, z) (n, m) for input tangents tx, tz (either may be None).

    dK_ij = f'(u_ij) du_ij with du_ij = 2 <xs_i - zs_j, scale (tx_i - tz_j)>.
    """
    return _dk(x, z, tx, tz, kernel).to(x.dtype)


def kmv_tangent(x, z, v, tx, tz, kernel: Kernel):
    """The part of the tangent of K(x, z) v that comes from tangents of x and z: dK v.

    Shape (n,) or (n, c) as v; dtype of x.
    """
    dk = _dk(x, z, tx, tz, kernel)
    return (dk @ v.to(dk.dtype)).to(x.dtype)


def kernel_matrix_grad(x, z, grad, kernel: Kernel):
    """Gradients of ``<grad, K(x, z)>`` (grad (n, m)) with respect to x and z, differentiable."""
    xs, zs = scaled(x, z, kernel)
    q = kernel.profile_derivative(sqdist(xs, zs)) * grad.to(xs.dtype)
    factor = 2.0 * kernel.scale
    gx = (q.sum(1, keepdim=True) * xs - q @ zs) * factor
    gz = (q.sum(0).unsqueeze(1) * zs - q.T @ xs) * factor
    return gx.to(x.dtype), gz.to(z.dtype)
