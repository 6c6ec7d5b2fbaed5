"""The kops operators: torch custom ops and their Python entry points.

``torch.ops.kops.kmv``, ``kmv_accumulate``, ``kmv_grad_xz`` and ``kernel_matrix`` are
registered here for CPU and CUDA (dispatching to a backend through kops.dispatch), with
fake (meta) implementations for torch.compile and autograd formulas that themselves call
the fused ops, so that no backward pass forms K.

NaN / infinity policy, the same on every backend: a NaN or infinity in row i of x gives
NaN in row i of the result; one anywhere in z or v gives NaN in every row of the result
(every row sums over all of z and v); for kernel_matrix, row i and column j are NaN. The
other rows are exact. This is enforced here, after the backend, by a pass over the inputs
(O((n + m) d), no device synchronisation). Pass ``check_finite=True`` to the Python
functions to get a ValueError naming the offending argument instead.
"""
from __future__ import annotations

import torch

from . import _native  # noqa: F401  (defines the op schemas)
from .backends.base import Case
from .dispatch import check_backend_name, select_backend
from .kernels import resolve_kernel
from .precision import accumulation_dtype, check_precision
from .validation import check_finite_inputs, check_kmv_args, check_matrix

__all__ = ["kmv", "kmv_accumulate", "kernel_matrix"]


def _case(op, x, z, c, kernel, precision) -> Case:
    return Case(op, x.device, x.dtype, x.shape[0], z.shape[0], x.shape[1], c, kernel.name, precision)


# ------------------------------------------------------------------ NaN policy
def _poison_nonfinite(out2, x, z, v2):
    """NaN into the rows of out2 (n, c) that a non-finite input reaches (policy above)."""
    bad = ~torch.isfinite(x).all(1, keepdim=True)
    bad |= ~(torch.isfinite(z).all() & torch.isfinite(v2).all())
    out2.masked_fill_(bad, float("nan"))


# --------------------------------------------------------------------------- kmv
def _kmv_into(out, x, z, v2, spec, precision, backend, alpha):
    """out (n, c, accumulation dtype, contiguous) += alpha * K(x, z) @ v2."""
    if x.shape[0] and z.shape[0] and v2.shape[1]:
        chosen = select_backend(backend, _case("kmv", x, z, v2.shape[1], spec, precision))
        chosen.kmv(x, z, v2, spec, precision, out, alpha)


@torch.library.register_kernel("kops::kmv", ("cpu", "cuda"))
def _kmv_kernel(x, z, v, kernel, bandwidth, precision, backend):
    spec = check_kmv_args(x, z, v, kernel, bandwidth, precision)
    v2 = v.unsqueeze(1) if v.dim() == 1 else v
    out = torch.zeros(x.shape[0], v2.shape[1], dtype=accumulation_dtype(x.dtype), device=x.device)
    _kmv_into(out, x, z, v2, spec, check_precision(precision), backend, 1.0)
    _poison_nonfinite(out, x, z, v2)
    out = out.to(x.dtype)
    return out.squeeze(1) if v.dim() == 1 else out


@torch.library.register_fake("kops::kmv")
def _kmv_fake(x, z, v, kernel, bandwidth, precision, backend):
    check_kmv_args(x, z, v, kernel, bandwidth, precision)
    shape = (x.shape[0],) if v.dim() == 1 else (x.shape[0], v.shape[1])
    return x.new_empty(shape)


def _kmv_setup_context(ctx, inputs, output):
    x, z, v, kernel, bandwidth, precision, backend = inputs
    ctx.save_for_backward(x, z, v)
    ctx.args = (kernel, bandwidth, precision, backend)


def _kmv_backward(ctx, grad):
    x, z, v = ctx.saved_tensors
    kernel, bandwidth, precision, backend = ctx.args
    need_x, need_z, need_v = ctx.needs_input_grad[:3]
    grad_x = grad_z = grad_v = None
    if need_v:  # d<g, K v>/dv = K(z, x) g: a kernel product with x and z swapped
        grad_v = torch.ops.kops.kmv(z, x, grad, kernel, bandwidth, precision, backend)
    if need_x or need_z:
        g2 = grad.unsqueeze(1) if grad.dim() == 1 else grad
        v2 = v.unsqueeze(1) if v.dim() == 1 else v
        gx, gz = torch.ops.kops.kmv_grad_xz(x, z, v2, g2, kernel, bandwidth, precision, backend)
        grad_x = gx if need_x else None
        grad_z = gz if need_z else None
    return grad_x, grad_z, grad_v, None, None, None, None


torch.library.register_autograd("kops::kmv", _kmv_backward, setup_context=_kmv_setup_context)


# ----------------------------------------------------------------- kmv_accumulate
@torch.library.register_kernel("kops::kmv_accumulate", ("cpu", "cuda"))
def _kmv_accumulate_kernel(out, x, z, v, kernel, bandwidth, alpha, precision, backend):
    spec = check_kmv_args(x, z, v, kernel, bandwidth, precision)
    _check_out(out, x, v)
    v2 = v.unsqueeze(1) if v.dim() == 1 else v
    out2 = out.unsqueeze(1) if out.dim() == 1 else out
    acc = accumulation_dtype(x.dtype)
    if out2.dtype == acc and out2.is_contiguous():
        _kmv_into(out2, x, z, v2, spec, check_precision(precision), backend, float(alpha))
        _poison_nonfinite(out2, x, z, v2)
    else:  # accumulate in a temporary of the accumulation dtype, then add once
        tmp = torch.zeros(out2.shape, dtype=acc, device=x.device)
        _kmv_into(tmp, x, z, v2, spec, check_precision(precision), backend, float(alpha))
        _poison_nonfinite(tmp, x, z, v2)
        out2.add_(tmp.to(out2.dtype))


@torch.library.register_fake("kops::kmv_accumulate")
def _kmv_accumulate_fake(out, x, z, v, kernel, bandwidth, alpha, precision, backend):
    check_kmv_args(x, z, v, kernel, bandwidth, precision)
    _check_out(out, x, v)


def _check_out(out, x, v):
    check_matrix(out, "out", ndim=(1, 2))
    want = (x.shape[0],) + tuple(v.shape[1:])
    if tuple(out.shape) != want:
        raise ValueError(f"out must have shape {want} (n, c) to match x and v, got {tuple(out.shape)}")
    if out.device != x.device:
        raise ValueError(f"out is on {out.device} but x is on {x.device}")


# -------------------------------------------------------------------- kmv_grad_xz
@torch.library.register_kernel("kops::kmv_grad_xz", ("cpu", "cuda"))
def _kmv_grad_xz_kernel(x, z, v, grad_out, kernel, bandwidth, precision, backend):
    spec = check_kmv_args(x, z, v, kernel, bandwidth, precision)
    v2 = v.unsqueeze(1) if v.dim() == 1 else v
    g2 = grad_out.unsqueeze(1) if grad_out.dim() == 1 else grad_out
    if g2.shape != (x.shape[0], v2.shape[1]):
        raise ValueError(f"grad_out must have shape {(x.shape[0], v2.shape[1])}, got {tuple(grad_out.shape)}")
    if x.shape[0] == 0 or z.shape[0] == 0 or v2.shape[1] == 0:
        return torch.zeros_like(x), torch.zeros_like(z)
    precision = check_precision(precision)
    chosen = select_backend(backend, _case("kmv_grad_xz", x, z, v2.shape[1], spec, precision))
    gx, gz = chosen.kmv_grad_xz(x, z, v2, g2.to(x.dtype), spec, precision)
    return gx.to(x.dtype), gz.to(z.dtype)


@torch.library.register_fake("kops::kmv_grad_xz")
def _kmv_grad_xz_fake(x, z, v, grad_out, kernel, bandwidth, precision, backend):
    check_kmv_args(x, z, v, kernel, bandwidth, precision)
    return torch.empty_like(x), torch.empty_like(z)


# ------------------------------------------------------------------ kernel_matrix
@torch.library.register_kernel("kops::kernel_matrix", ("cpu", "cuda"))
def _kernel_matrix_kernel(x, z, kernel, bandwidth, precision, backend):
    spec = check_kmv_args(x, z, None, kernel, bandwidth, precision)
    if x.shape[0] == 0 or z.shape[0] == 0:
        return x.new_zeros(x.shape[0], z.shape[0])
    precision = check_precision(precision)
    chosen = select_backend(backend, _case("kernel_matrix", x, z, 0, spec, precision))
    k = chosen.kernel_matrix(x, z, spec, precision)
    k.masked_fill_(~torch.isfinite(x).all(1, keepdim=True), float("nan"))
    k.masked_fill_(~torch.isfinite(z).all(1).unsqueeze(0), float("nan"))
    return k.to(x.dtype)


@torch.library.register_fake("kops::kernel_matrix")
def _kernel_matrix_fake(x, z, kernel, bandwidth, precision, backend):
    check_kmv_args(x, z, None, kernel, bandwidth, precision)
    return x.new_empty(x.shape[0], z.shape[0])


def _kernel_matrix_setup_context(ctx, inputs, output):
    x, z, kernel, bandwidth, precision, backend = inputs
    ctx.save_for_backward(x, z)
    ctx.args = (kernel, bandwidth, precision)


def _kernel_matrix_backward(ctx, grad):
    # K(x, z) is meant for small blocks, so its backward forms the block's derivative in torch.
    x, z = ctx.saved_tensors
    kernel, bandwidth, precision = ctx.args
    spec = resolve_kernel(kernel, bandwidth)
    acc = accumulation_dtype(x.dtype)
    xs, zs = x.to(acc) * spec.scale, z.to(acc) * spec.scale
    diff = xs.unsqueeze(1) - zs.unsqueeze(0)
    u = diff.square().sum(-1)
    q = spec.profile_derivative(u) * grad.to(acc)  # dK/dxs_i = 2 f'(u) (xs_i - zs_j)
    gx = (q.unsqueeze(-1) * diff).sum(1) * (2 * spec.scale)
    gz = -(q.unsqueeze(-1) * diff).sum(0) * (2 * spec.scale)
    return gx.to(x.dtype), gz.to(z.dtype), None, None, None, None


torch.library.register_autograd(
    "kops::kernel_matrix", _kernel_matrix_backward, setup_context=_kernel_matrix_setup_context
)


# ------------------------------------------------------------- Python entry points
def _resolve(kernel, bandwidth, precision, backend, **tensors):
    for name, t in tensors.items():  # before the dispatcher's own, less helpful, cast error
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    spec = resolve_kernel(kernel, bandwidth)
    return spec, check_precision(precision), check_backend_name(backend)


def kmv(x, z, v, kernel="gaussian", bandwidth=None, *, precision="ieee", backend="auto",
        check_finite=False):
    """Kernel-matrix-vector product ``K(x, z) @ v`` without forming K.

    ``K_ij = k(x_i, z_j)``; for the Gaussian kernel ``k = exp(-|x - z|^2 / (2 s^2))``, for
    the Laplacian ``k = exp(-|x - z| / s)`` (others: see :mod:`kops.kernels`).

    Parameters
    ----------
    x : Tensor, shape (n, d)
    z : Tensor, shape (m, d)
    v : Tensor, shape (m,) or (m, c)
        x, z and v share one floating dtype and one device; any strides are accepted.
    kernel : str or kops.Kernel
        A kernel object (which carries its bandwidth) or a name: "gaussian", "laplacian",
        "matern32", "matern52".
    bandwidth : float, optional
        s > 0; required when ``kernel`` is a name.
    precision : {"ieee", "tf32", "bf16"}
        Operand precision of the matrix products (see :mod:`kops.precision`).
    backend : {"auto", "torch", "triton", "cuda", "cpu"}
        "auto" picks the fastest available backend (the ``KOPS_BACKEND`` environment variable
        overrides "auto").
    check_finite : bool
        Raise ValueError if x, z or v hold NaN or infinity (see the NaN policy in kops.ops).

    Returns
    -------
    Tensor, shape (n,) or (n, c), dtype of x.
        float16 / bfloat16 inputs are accumulated in float32. Differentiable in x, z and v.
    """
    spec, precision, backend = _resolve(kernel, bandwidth, precision, backend, x=x, z=z, v=v)
    if check_finite:
        check_finite_inputs(x=x, z=z, v=v)
    return torch.ops.kops.kmv(x, z, v, spec.name, spec.bandwidth, precision, backend)


def kmv_accumulate(out, x, z, v, kernel="gaussian", bandwidth=None, *, alpha=1.0,
                   precision="ieee", backend="auto", check_finite=False):
    """In place ``out += alpha * K(x, z) @ v``; returns ``out``.

    Shapes as in :func:`kmv`; ``out`` is (n,) or (n, c) matching ``v``, on x's device, of
    any floating dtype (the product is accumulated in float32 / float64 and added once).
    Not differentiable (it is meant for solver updates).
    """
    spec, precision, backend = _resolve(kernel, bandwidth, precision, backend, out=out, x=x, z=z, v=v)
    if check_finite:
        check_finite_inputs(x=x, z=z, v=v)
    torch.ops.kops.kmv_accumulate(out, x, z, v, spec.name, spec.bandwidth, float(alpha), precision, backend)
    return out


def kernel_matrix(x, z, kernel="gaussian", bandwidth=None, *, precision="ieee", backend="auto"):
    """The kernel matrix ``K(x, z)``, shape (n, m), for blocks small enough to hold.

    Parameters as in :func:`kmv`. Differentiable in x and z.
    """
    spec, precision, backend = _resolve(kernel, bandwidth, precision, backend, x=x, z=z)
    return torch.ops.kops.kernel_matrix(x, z, spec.name, spec.bandwidth, precision, backend)

