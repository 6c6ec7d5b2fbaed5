"""Derivatives beyond the first gradient, and learnt bandwidths / ARD lengthscales.

Each path that used to give silent zeros (forward mode, double backward, torch.func
transforms) is checked against finite differences or a dense float64 torch formula.
"""
import math
import warnings

import pytest
import torch

import kops
from kops.testing import random_problem

KERNELS = list(kops.KERNELS)  # the kernel table: a new kernel is tested everywhere
# the torch reference and the native CPU kernels both take float64 on CPU
BACKENDS = ["torch", "cpu"]


def _leaves(*tensors):
    return [t.detach().clone().requires_grad_(True) for t in tensors]


def _dense(x, z, v, kernel, lengths):
    """K(x, z) v from torch operations only (autograd does the rest): the oracle."""
    r = ((x / lengths).unsqueeze(1) - (z / lengths).unsqueeze(0)).square().sum(-1).clamp_min(1e-30).sqrt()
    if kernel == "gaussian":
        k = torch.exp(-r.square() / 2)
    elif kernel == "laplacian":
        k = torch.exp(-r)
    elif kernel == "cauchy":
        k = 1 / (1 + r.square())
    elif kernel == "matern32":
        t = math.sqrt(3) * r
        k = (1 + t) * torch.exp(-t)
    else:
        t = math.sqrt(5) * r
        k = (1 + t + t.square() / 3) * torch.exp(-t)
    return k @ v


@pytest.fixture
def problem(generator):
    x, z, v, bw = random_problem(6, 5, 3, 2, dtype=torch.float64, generator=generator)
    return _leaves(x, z, v) + [bw]


# ------------------------------------------------------------------ higher order
@pytest.mark.parametrize("kernel", KERNELS)
def test_gradgradcheck_kmv(kernel, problem):
    x, z, v, bw = problem
    f = lambda a, b, c: kops.kmv(a, b, c, kernel, bw)  # noqa: E731
    assert torch.autograd.gradgradcheck(f, (x, z, v))


@pytest.mark.parametrize("kernel", ["gaussian", "matern32", "cauchy"])
def test_gradgradcheck_gemm_path_and_coincident_points(kernel, generator):
    # d = 11: the dense formulas use the GEMM trick; z repeats rows of x (u = 0 exactly)
    x, z, v, bw = random_problem(6, 5, 11, 2, dtype=torch.float64, generator=generator)
    z[:2] = x[:2]
    x, z, v = _leaves(x, z, v)
    f = lambda a, b, c: kops.kmv(a, b, c, kernel, bw)  # noqa: E731
    assert torch.autograd.gradgradcheck(f, (x, z, v))
    assert torch.autograd.gradcheck(f, (x, z, v), check_forward_ad=True, check_backward_ad=False,
                                    check_undefined_grad=False, check_batched_grad=False)


@pytest.mark.parametrize("kernel", KERNELS)
def test_forward_mode_matches_finite_differences(kernel, problem):
    x, z, v, bw = problem
    f = lambda a, b, c: kops.kmv(a, b, c, kernel, bw)  # noqa: E731
    assert torch.autograd.gradcheck(f, (x, z, v), check_forward_ad=True, check_backward_ad=False,
                                    check_undefined_grad=False, check_batched_grad=False)


def test_forward_mode_kernel_matrix(problem):
    x, z, _, bw = problem
    f = lambda a, b: kops.kernel_matrix(a, b, "matern52", bw)  # noqa: E731
    assert torch.autograd.gradcheck(f, (x, z), check_forward_ad=True, check_backward_ad=False,
                                    check_undefined_grad=False)
    assert torch.autograd.gradgradcheck(f, (x, z))


def test_jvp_is_not_zero_and_matches_dense(problem):
    x, z, v, bw = problem
    tx = torch.randn_like(x)
    _, got = torch.func.jvp(lambda a: kops.kmv(a, z.detach(), v.detach(), "gaussian", bw), (x.detach(),), (tx,))
    lengths = torch.tensor(bw, dtype=torch.float64)
    _, want = torch.func.jvp(lambda a: _dense(a, z.detach(), v.detach(), "gaussian", lengths), (x.detach(),), (tx,))
    assert got.abs().max() > 0
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("kernel", ["gaussian", "matern52"])
def test_func_grad_and_hessian_match_dense(kernel, problem):
    x, z, v, bw = problem
    z, v = z.detach(), v.detach()[:, 0]
    lengths = torch.tensor(bw, dtype=torch.float64)

    def ours(a):
        return kops.kmv(a, z, v, kernel, bw).square().sum()

    def dense(a):
        return _dense(a, z, v, kernel, lengths).square().sum()

    x0 = x.detach()
    torch.testing.assert_close(torch.func.grad(ours)(x0), torch.func.grad(dense)(x0))
    torch.testing.assert_close(torch.func.hessian(ours)(x0), torch.func.hessian(dense)(x0))
    torch.testing.assert_close(torch.func.jacfwd(ours)(x0), torch.func.grad(dense)(x0))


def test_hessian_at_coincident_points_is_finite(generator):
    # x is z: u = 0 on the diagonal, where the Matern profiles involve sqrt(u)
    x = torch.randn(5, 3, dtype=torch.float64, generator=generator)
    v = torch.randn(5, dtype=torch.float64, generator=generator)
    z = x.clone()
    h = torch.func.hessian(lambda a: kops.kmv(a, z, v, "matern32", 1.3).sum())(x)
    assert torch.isfinite(h).all()
    # the Matern 3/2 kernel is twice differentiable at r = 0: finite differences of the
    # gradient see the exact second derivative 2 f'(0) scale^2 = -3 / s^2 there
    assert torch.autograd.gradgradcheck(lambda a: kops.kmv(a, z, v, "matern32", 1.3), (x.requires_grad_(True),))


def test_vmap_matches_a_loop(generator):
    xs = torch.randn(3, 6, 4, dtype=torch.float64, generator=generator)
    z = torch.randn(5, 4, dtype=torch.float64, generator=generator)
    v = torch.randn(5, dtype=torch.float64, generator=generator)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the batching fallback's performance warning
        got = torch.vmap(lambda a: kops.kmv(a, z, v, "laplacian", 2.0))(xs)
    want = torch.stack([kops.kmv(a, z, v, "laplacian", 2.0) for a in xs])
    torch.testing.assert_close(got, want)


def test_raw_op_double_backward(problem):
    x, z, v, bw = problem
    f = lambda a, b, c: torch.ops.kops.kmv(a, b, c, "laplacian", bw, "ieee", "auto")  # noqa: E731
    assert torch.autograd.gradgradcheck(f, (x, z, v))


def test_raw_grad_op_is_differentiable(problem):
    x, z, v, bw = problem
    g = torch.randn(x.shape[0], v.shape[1], dtype=torch.float64, requires_grad=True)
    f = lambda a, b, c, d: torch.ops.kops.kmv_grad_xz(a, b, c, d, "matern32", bw, "ieee", "auto")  # noqa: E731
    assert torch.autograd.gradcheck(f, (x, z, v, g))


def test_raw_op_refuses_forward_mode(problem):
    x, z, v, bw = problem
    with pytest.raises(RuntimeError, match="forward-mode"):
        torch.func.jvp(lambda a: torch.ops.kops.kmv(a, z.detach(), v.detach(), "gaussian", bw, "ieee", "auto"),
                       (x.detach(),), (torch.ones_like(x),))


# ------------------------------------------------------------ bandwidths and ARD
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kernel", KERNELS)
def test_gradcheck_scalar_bandwidth(backend, kernel, problem):
    x, z, v, bw = problem
    s = torch.tensor(bw, dtype=torch.float64, requires_grad=True)
    f = lambda a, b, c, s_: kops.kmv(a, b, c, kernel, s_, backend=backend)  # noqa: E731
    assert torch.autograd.gradcheck(f, (x, z, v, s))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kernel", ["gaussian", "laplacian"])
def test_gradcheck_ard_lengthscales(backend, kernel, problem):
    x, z, v, bw = problem
    ell = (bw * (0.5 + torch.rand(3, dtype=torch.float64))).requires_grad_(True)
    f = lambda a, b, c, e: kops.kmv(a, b, c, kernel, e, backend=backend)  # noqa: E731
    assert torch.autograd.gradcheck(f, (x, z, v, ell))
    g = lambda a, b, e: kops.kernel_matrix(a, b, kernel, e, backend=backend)  # noqa: E731
    assert torch.autograd.gradcheck(g, (x, z, ell))


def test_ard_matches_dense(problem):
    x, z, v, bw = problem
    ell = torch.tensor([0.7, 1.9, 3.1], dtype=torch.float64) * bw
    torch.testing.assert_close(kops.kmv(x, z, v, "matern32", ell), _dense(x, z, v, "matern32", ell))


def test_bandwidth_gradient_formula(problem):
    # for k(|x - z| / s): ds = -(<x, grad_x> + <z, grad_z>) / s
    x, z, v, bw = problem
    s = torch.tensor(bw, dtype=torch.float64, requires_grad=True)
    kops.kmv(x, z, v, "gaussian", s).sum().backward()
    want = -((x * x.grad).sum() + (z * z.grad).sum()) / bw
    torch.testing.assert_close(s.grad, want)


def test_kernel_object_with_tensor_bandwidth(problem):
    x, z, v, bw = problem
    s = torch.tensor(bw, dtype=torch.float64, requires_grad=True)
    out = kops.Gaussian(s).mv(x, z, v)
    torch.testing.assert_close(out, kops.kmv(x, z, v, "gaussian", bw))
    out.sum().backward()
    assert s.grad is not None and s.grad != 0


def test_bandwidth_checks(problem):
    x, z, v, _ = problem
    with pytest.raises(ValueError, match="lengthscales"):
        kops.kmv(x, z, v, "gaussian", torch.ones(4, dtype=torch.float64))
    with pytest.raises(ValueError, match="positive"):
        kops.kmv(x, z, v, "gaussian", torch.tensor([1.0, -1.0, 1.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="shape"):
        kops.kmv(x, z, v, "gaussian", torch.ones(2, 2))
