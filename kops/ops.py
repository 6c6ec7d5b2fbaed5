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

Derivatives: reverse mode through the fused ops (no K formed); higher orders (gradients of
gradients, ``create_graph=True``, ``torch.func.grad`` / ``hessian``) and forward mode
(``torch.func.jvp``, ``jacfwd``) through the dense torch formulas of :mod:`kops.autodiff`;
``torch.vmap`` loops over the batch. The Python functions (``kops.kmv``, ...) go through
autograd Functions that support all of these; a direct call of ``torch.ops.kops.kmv`` or
``kernel_matrix`` supports reverse mode of any order and refuses forward mode loudly.

Aliasing: ``kmv_accumulate`` with ``out`` sharing memory with x, z or v computes the
product into a temporary first, so the result is as if the inputs had been copied.
"""
from __future__ import annotations

import threading

import torch

from . import autodiff
from .backends.base import Case
from .backends.numerics import same_points
from .dispatch import check_backend_name, select_backend
from . import kernels as _kernels_module
from .kernels import resolve_kernel
from .precision import accumulation_dtype, check_precision
from .validation import check_finite_inputs, check_kmv_args, check_matrix

__all__ = ["kmv", "kmv_accumulate", "kernel_matrix", "SCHEMAS"]

# ------------------------------------------------------------------ the op schemas
# Defined once, here (the compiled extension registers only its private ops). The bandwidth is
# a float: learnt or per-feature bandwidths are applied by the Python entry points, which
# divide the inputs and call the ops with bandwidth 1 (see _apply_lengthscales).
SCHEMAS = {
    # out = K(x, z) @ v
    "kmv": "(Tensor x, Tensor z, Tensor v, str kernel, float bandwidth, str precision, "
    "str backend) -> Tensor",
    # out += alpha * K(x, z) @ v   (in place; used by the solvers)
    "kmv_accumulate": "(Tensor(a!) out, Tensor x, Tensor z, Tensor v, str kernel, "
    "float bandwidth, float alpha, str precision, str backend) -> ()",
    # gradients of <grad_out, K(x, z) @ v> with respect to x and z
    "kmv_grad_xz": "(Tensor x, Tensor z, Tensor v, Tensor grad_out, str kernel, "
    "float bandwidth, str precision, str backend) -> (Tensor, Tensor)",
    # K(x, z), for small blocks
    "kernel_matrix": "(Tensor x, Tensor z, str kernel, float bandwidth, str precision, "
    "str backend) -> Tensor",
}
_LIBRARY = torch.library.Library("kops", "FRAGMENT")
for _name, _schema in SCHEMAS.items():
    _LIBRARY.define(_name + _schema)


def _case(op, x, z, c, kernel, precision) -> Case:
    return Case(op, x.device, x.dtype, x.shape[0], z.shape[0], x.shape[1], c, kernel.name, precision)


def _cols(t):
    return t.unsqueeze(1) if t.dim() == 1 else t


# --------------------------------------------------------------- forward-mode guard
# A dual level is active in torch.func.jvp / jacfwd and in torch.autograd.forward_ad. The
# ops' own autograd formulas are reverse mode only, and torch would silently give them a
# zero tangent; the autograd Functions below set this flag around the calls whose tangent
# they compute themselves.
_STATE = threading.local()


class _TangentsHandled:
    def __enter__(self):
        _STATE.depth = getattr(_STATE, "depth", 0) + 1

    def __exit__(self, *exc):
        _STATE.depth -= 1


def _refuse_forward_ad(op: str) -> None:
    if torch.autograd.forward_ad._current_level >= 0 and getattr(_STATE, "depth", 0) == 0:
        raise RuntimeError(
            f"torch.ops.kops.{op} has no forward-mode derivative of its own (it would be silently "
            f"zero); call kops.{op}(...) instead, which supports torch.func.jvp / jacfwd"
        )


# ------------------------------------------------------------------ NaN policy
def _sum_is_finite(t: torch.Tensor) -> bool:
    # A sum is finite only if every entry is (inf and NaN propagate; overflow of a large finite
    # sum only sends the caller to the exact test). One reduction, no boolean temporary.
    return bool(torch.isfinite(t.sum()))


def _poison_nonfinite(out2, x, z, v2):
    """NaN into the rows of out2 (n, c) that a non-finite input reaches (policy above)."""
    if x.device.type == "cpu" and _sum_is_finite(z) and _sum_is_finite(v2) and _sum_is_finite(x):
        return  # the common case, about 20x cheaper than the elementwise test (solvers call per batch)
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
    _refuse_forward_ad("kmv")
    spec = check_kmv_args(x, z, v, kernel, bandwidth, precision)
    v2 = _cols(v)
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
    """Gradients of <grad, K(x, z) v>: fused ops, or differentiable torch under create_graph."""
    x, z, v = ctx.saved_tensors
    kernel, bandwidth, precision, backend = ctx.args
    need_x, need_z, need_v = ctx.needs_input_grad[:3]
    grad_x = grad_z = grad_v = None
    if need_v:  # d<g, K v>/dv = K(z, x) g: a kernel product with x and z swapped
        grad_v = _KmvFunction.apply(z, x, grad, kernel, bandwidth, precision, backend)
    if need_x or need_z:
        if torch.is_grad_enabled():
            # create_graph=True (or a torch.func transform): the gradient must itself be
            # differentiable, so it is built from torch operations on dense blocks.
            gx, gz = autodiff.kmv_grad_xz(x, z, v, grad, resolve_kernel(kernel, bandwidth))
        else:
            gx, gz = torch.ops.kops.kmv_grad_xz(x, z, _cols(v), _cols(grad), kernel, bandwidth, precision, backend)
        grad_x = gx if need_x else None
        grad_z = gz if need_z else None
    return grad_x, grad_z, grad_v, None, None, None, None


torch.library.register_autograd("kops::kmv", _kmv_backward, setup_context=_kmv_setup_context)


class _KmvFunction(torch.autograd.Function):
    """``K(x, z) @ v`` with reverse mode (any order), forward mode and vmap support."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, z, v, kernel, bandwidth, precision, backend):
        with _TangentsHandled():
            return torch.ops.kops.kmv(x, z, v, kernel, bandwidth, precision, backend)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _kmv_setup_context(ctx, inputs, output)
        ctx.save_for_forward(*inputs[:3])

    @staticmethod
    def backward(ctx, grad):
        return _kmv_backward(ctx, grad)

    @staticmethod
    def jvp(ctx, tx, tz, tv, *_):
        """d(K v) = K dv + dK v (the second term in dense torch, see kops.autodiff)."""
        x, z, v = ctx.saved_tensors
        kernel, bandwidth, precision, backend = ctx.args
        out = None
        if tv is not None:
            with _TangentsHandled():
                out = torch.ops.kops.kmv(x, z, tv, kernel, bandwidth, precision, backend)
        if tx is not None or tz is not None:
            part = autodiff.kmv_tangent(x, z, v, tx, tz, resolve_kernel(kernel, bandwidth))
            out = part if out is None else out + part
        if out is None:
            shape = (x.shape[0],) + tuple(v.shape[1:])
            out = torch.zeros(shape, dtype=x.dtype, device=x.device)
        return out


# ----------------------------------------------------------------- kmv_accumulate
def _byte_span(t):
    start = t.storage_offset() * t.element_size()
    last = sum((size - 1) * stride for size, stride in zip(t.shape, t.stride()))
    return start, start + (last + 1) * t.element_size()


def overlaps(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether the memory a and b may touch intersects (a conservative test by byte range)."""
    if a.numel() == 0 or b.numel() == 0 or a.device != b.device:
        return False
    if a.untyped_storage().data_ptr() != b.untyped_storage().data_ptr():
        return False
    (s0, e0), (s1, e1) = _byte_span(a), _byte_span(b)
    return s0 < e1 and s1 < e0


@torch.library.register_kernel("kops::kmv_accumulate", ("cpu", "cuda"))
def _kmv_accumulate_kernel(out, x, z, v, kernel, bandwidth, alpha, precision, backend):
    spec = check_kmv_args(x, z, v, kernel, bandwidth, precision)
    _check_out(out, x, v)
    v2 = _cols(v)
    out2 = _cols(out)
    acc = accumulation_dtype(x.dtype)
    aliased = any(overlaps(out, t) for t in (x, z, v))
    if out2.dtype == acc and out2.is_contiguous() and not aliased:
        _kmv_into(out2, x, z, v2, spec, check_precision(precision), backend, float(alpha))
        _poison_nonfinite(out2, x, z, v2)
    else:
        # Accumulate in a temporary of the accumulation dtype, then add once: also the way to
        # stay correct when out shares memory with an input (every input is read before out
        # is written).
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
    v2 = _cols(v)
    g2 = _cols(grad_out)
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


def _grad_xz_setup_context(ctx, inputs, output):
    x, z, v, grad_out, kernel, bandwidth, precision, backend = inputs
    ctx.save_for_backward(x, z, v, grad_out)
    ctx.args = (kernel, bandwidth)


def _grad_xz_backward(ctx, ggx, ggz):
    """Second derivatives: the vector-Jacobian product of the dense torch gradient formula."""
    spec = resolve_kernel(*ctx.args)
    create = torch.is_grad_enabled()
    with torch.enable_grad():
        # Differentiate with respect to the saved tensors themselves where they are part of
        # a graph (so that create_graph chains on), else with respect to detached copies.
        leaves = [t if (create and t.requires_grad) else t.detach().requires_grad_(True) for t in ctx.saved_tensors]
        gx, gz = autodiff.kmv_grad_xz(*leaves, spec)
        pairs = [(o, g) for o, g in ((gx, ggx), (gz, ggz)) if g is not None]
        grads = torch.autograd.grad([o for o, _ in pairs], leaves, [g for _, g in pairs],
                                    allow_unused=True, create_graph=create)
    need = ctx.needs_input_grad
    out = [g if (need[i] and g is not None) else (torch.zeros_like(leaves[i]) if need[i] else None)
           for i, g in enumerate(grads)]
    return (*out, None, None, None, None)


torch.library.register_autograd("kops::kmv_grad_xz", _grad_xz_backward, setup_context=_grad_xz_setup_context)


# ------------------------------------------------------------------ kernel_matrix
@torch.library.register_kernel("kops::kernel_matrix", ("cpu", "cuda"))
def _kernel_matrix_kernel(x, z, kernel, bandwidth, precision, backend):
    _refuse_forward_ad("kernel_matrix")
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
    ctx.args = (kernel, bandwidth)


def _kernel_matrix_backward(ctx, grad):
    # K(x, z) is meant for small blocks, so its backward forms the block's derivative in
    # torch (differentiable, so any order works).
    x, z = ctx.saved_tensors
    gx, gz = autodiff.kernel_matrix_grad(x, z, grad, resolve_kernel(*ctx.args))
    need_x, need_z = ctx.needs_input_grad[:2]
    return (gx if need_x else None), (gz if need_z else None), None, None, None, None


torch.library.register_autograd(
    "kops::kernel_matrix", _kernel_matrix_backward, setup_context=_kernel_matrix_setup_context
)


class _KernelMatrixFunction(torch.autograd.Function):
    """K(x, z) with reverse mode (any order), forward mode and vmap support."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, z, kernel, bandwidth, precision, backend):
        with _TangentsHandled():
            return torch.ops.kops.kernel_matrix(x, z, kernel, bandwidth, precision, backend)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _kernel_matrix_setup_context(ctx, inputs, output)
        ctx.save_for_forward(*inputs[:2])

    @staticmethod
    def backward(ctx, grad):
        return _kernel_matrix_backward(ctx, grad)

    @staticmethod
    def jvp(ctx, tx, tz, *_):
        x, z = ctx.saved_tensors
        return autodiff.kernel_matrix_tangent(x, z, tx, tz, resolve_kernel(*ctx.args))


# ------------------------------------------------------------- Python entry points
def _resolve(kernel, bandwidth, precision, backend, **tensors):
    for name, t in tensors.items():  # before the dispatcher's own, less helpful, cast error
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    spec = resolve_kernel(kernel, bandwidth)
    return spec, check_precision(precision), check_backend_name(backend)


def _apply_lengthscales(spec, x, z):
    """(kernel with a float bandwidth, x, z): a tensor bandwidth divides the inputs once.

    For every kops kernel k(x, z; s) = k(x / s, z / s; 1), so a 0-d bandwidth or (d,)
    lengthscales (ARD) become a division of the inputs, through which autograd carries the
    bandwidth's gradient, ``-(<x, grad_x> + <z, grad_z>) / s`` for a scalar s.
    """
    if not spec.learnable:
        return spec, x, z
    lengths = spec.bandwidth
    if lengths.dim() == 1 and lengths.shape[0] != x.shape[-1]:
        raise ValueError(
            f"bandwidth has {lengths.shape[0]} lengthscales but x and z have d = {x.shape[-1]} features"
        )
    lengths = lengths.to(device=x.device, dtype=x.dtype)
    same = same_points(x, z)
    xs = x / lengths
    return spec.unit(), xs, (xs if same else z / lengths)


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
    bandwidth : float or Tensor, optional
        s > 0; required when ``kernel`` is a name. A 0-d tensor is differentiable (a learnt
        lengthscale); a (d,) tensor gives one lengthscale per feature (ARD:
        ``k(x / s, z / s)`` with the division per feature), also differentiable.
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
        float16 / bfloat16 inputs are accumulated in float32. Differentiable in x, z, v and
        a tensor bandwidth, in reverse mode of any order and in forward mode (see the
        module docstring).
    """
    spec, precision, backend = _resolve(kernel, bandwidth, precision, backend, x=x, z=z, v=v)
    if check_finite:
        check_finite_inputs(x=x, z=z, v=v)
    spec, x, z = _apply_lengthscales(spec, x, z)
    if torch.compiler.is_compiling():
        # Dynamo cannot trace an autograd Function with a custom jvp; the op itself carries
        # the reverse-mode formulas torch.compile needs (and refuses forward mode loudly).
        return torch.ops.kops.kmv(x, z, v, spec.name, spec.bandwidth, precision, backend)
    return _KmvFunction.apply(x, z, v, spec.name, spec.bandwidth, precision, backend)


def kmv_accumulate(out, x, z, v, kernel="gaussian", bandwidth=None, *, alpha=1.0,
                   precision="ieee", backend="auto", check_finite=False):
    """In place ``out += alpha * K(x, z) @ v``; returns ``out``.

    Shapes as in :func:`kmv`; ``out`` is (n,) or (n, c) matching ``v``, on x's device, of
    any floating dtype (the product is accumulated in float32 / float64 and added once).
    Not differentiable (it is meant for solver updates). ``out`` may share memory with x, z
    or v: the result is then as if they had been copied first.
    """
    spec, precision, backend = _resolve(kernel, bandwidth, precision, backend, out=out, x=x, z=z, v=v)
    if check_finite:
        check_finite_inputs(x=x, z=z, v=v)
    with torch.no_grad():
        spec, x, z = _apply_lengthscales(spec, x, z)
    torch.ops.kops.kmv_accumulate(out, x, z, v, spec.name, spec.bandwidth, float(alpha), precision, backend)
    return out


def kernel_matrix(x, z, kernel="gaussian", bandwidth=None, *, precision="ieee", backend="auto"):
    """The kernel matrix ``K(x, z)``, shape (n, m), for blocks small enough to hold.

    Parameters as in :func:`kmv`. Differentiable in x, z and a tensor bandwidth (any order,
    reverse and forward mode).
    """
    spec, precision, backend = _resolve(kernel, bandwidth, precision, backend, x=x, z=z)
    spec, x, z = _apply_lengthscales(spec, x, z)
    if torch.compiler.is_compiling():  # as in kmv
        return torch.ops.kops.kernel_matrix(x, z, spec.name, spec.bandwidth, precision, backend)
    return _KernelMatrixFunction.apply(x, z, spec.name, spec.bandwidth, precision, backend)


# The conveniences kernel(x, z) and kernel.mv(x, z, v) of kops.kernels call these.
_kernels_module._ENTRY_POINTS.update(kmv=kmv, kernel_matrix=kernel_matrix)
