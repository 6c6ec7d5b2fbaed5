"""The backend contract: properties every backend must have, one parametrized suite.

Every backend that can run here is tested (torch, cpu, triton in the interpreter; cuda where a
GPU is present) on every kernel of the kernel table where the property depends on the kernel:
agreement with the float64 reference over awkward shapes, 1-D v, far-from-origin data,
reduced-precision modes, half inputs, strided inputs, empty sizes, the exact diagonal,
kernel_matrix, the accumulate form, the NaN policy, gradients (also at coincident points and
for a learnt bandwidth) and aliasing. Per-backend files keep only what is specific to one
backend (instruction sets, splits, compile checks, limits).
"""
import pytest
import torch

import kops
from kops.testing import (
    assert_kmv_close,
    random_problem,
    reference_kernel_matrix,
    reference_kmv,
    reference_kmv_grads,
)

from helpers import ALL_BACKENDS, skip_unless_runs

# Awkward sizes: 1, 97 and 1025 rows; d = 1, 3, 59 and 784.
SHAPES = [
    (1, 1, 1),
    (97, 1025, 3),
    (1025, 97, 59),
    (97, 97, 784),
    (1025, 1025, 1),
    (1, 1025, 784),
    (1025, 1, 59),
]
KERNELS = list(kops.KERNELS)  # the kernel table: a new kernel is tested everywhere


# --------------------------------------------------------------------- forward values
@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("n,m,d", SHAPES)
def test_kmv_matches_float64_reference(backend, n, m, d, kernel, dtype, generator):
    c = 1 if n * m > 100_000 else 3
    x, z, v, bw = random_problem(n, m, d, c, dtype=dtype, generator=generator)
    skip_unless_runs(backend, x, z, c, kernel)
    out = kops.kmv(x, z, v, kernel, bw, backend=backend)
    assert out.shape == (n, c) and out.dtype == dtype
    assert_kmv_close(out, x, z, v, kernel, bw)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("kernel", ["gaussian", "laplacian"])
def test_vector_v_gives_vector_result(backend, kernel, generator):
    x, z, v, bw = random_problem(97, 59, 5, None, generator=generator)
    skip_unless_runs(backend, x, z, 1, kernel)
    out = kops.kmv(x, z, v, kernel, bw, backend=backend)
    assert out.shape == (97,)
    assert_kmv_close(out, x, z, v, kernel, bw)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("d", [3, 59])
def test_far_from_origin_data_is_accurate(backend, d, generator):
    # Points at distance ~1000 bandwidths from the origin: without centring the GEMM trick
    # would lose every digit of the distances in float32.
    x, z, v, bw = random_problem(97, 129, d, 2, generator=generator, offset=1000.0 * d**0.5)
    skip_unless_runs(backend, x, z, 2, "gaussian")
    out = kops.kmv(x, z, v, "gaussian", bw, backend=backend)
    assert_kmv_close(out, x, z, v, "gaussian", bw)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("precision", ["tf32", "bf16"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kernel", ["gaussian", "laplacian"])
def test_reduced_precision_modes_within_their_tolerance(backend, precision, dtype, kernel, generator):
    x, z, v, bw = random_problem(97, 200, 59, 4, dtype=dtype, generator=generator)
    skip_unless_runs(backend, x, z, 4, kernel, precision)
    out = kops.kmv(x, z, v, kernel, bw, precision=precision, backend=backend)
    assert_kmv_close(out, x, z, v, kernel, bw, precision=precision)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_accumulate_in_float32(backend, dtype, generator):
    # 4097 terms per output: a float16 accumulator would be off by ~1e-2 relative.
    x, z, v, bw = random_problem(33, 4097, 8, 2, dtype=dtype, generator=generator)
    skip_unless_runs(backend, x, z, 2, "gaussian")
    out = kops.kmv(x, z, v, "gaussian", bw, backend=backend)
    assert out.dtype == dtype
    assert_kmv_close(out, x, z, v, "gaussian", bw)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_noncontiguous_transposed_and_expanded_inputs(backend, generator):
    x, z, v, bw = random_problem(97, 130, 59, 6, generator=generator)
    skip_unless_runs(backend, x, z, 3, "laplacian")
    xt = x.T.contiguous().T  # transposed storage
    zs = torch.cat([z, z], 1)[:, ::2]  # strided columns (values differ from z: fine)
    ve = v[:, ::2]  # strided columns
    zrow = z[:1].expand(130, 59)  # stride-0 rows
    expected = kops.kmv(x.contiguous(), zs.contiguous(), ve.contiguous(), "laplacian", bw, backend=backend)
    torch.testing.assert_close(kops.kmv(xt, zs, ve, "laplacian", bw, backend=backend), expected)
    assert_kmv_close(kops.kmv(xt, zrow, ve, "laplacian", bw, backend=backend), x, zrow, ve, "laplacian", bw)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("n,m,c", [(0, 5, 2), (5, 0, 2), (0, 0, 1), (5, 7, 0)])
def test_empty_sizes_give_zeros_of_the_right_shape(backend, n, m, c):
    x, z, v = torch.randn(n, 3), torch.randn(m, 3), torch.randn(m, c)
    if backend != "torch":
        skip_unless_runs(backend, torch.randn(1, 3), torch.randn(1, 3), 1, "gaussian")
    out = kops.kmv(x, z, v, "gaussian", 1.0, backend=backend)
    assert out.shape == (n, c)
    assert torch.equal(out, torch.zeros(n, c))


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("d", [4, 59])  # direct-difference and GEMM-trick paths
def test_same_tensor_gives_exact_ones_on_the_diagonal(backend, d, generator):
    x = torch.randn(300, d, generator=generator) * 30 + 500  # cancellation-prone data
    skip_unless_runs(backend, x, x, 0, "laplacian", op="kernel_matrix")
    k = kops.kernel_matrix(x, x, "laplacian", 7.0, backend=backend)
    assert torch.equal(torch.diagonal(k), torch.ones(300))
    torch.testing.assert_close(k.double(), reference_kernel_matrix(x, x, "laplacian", 7.0), rtol=0, atol=1e-4)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("kernel", KERNELS)
def test_kernel_matrix_matches_reference(backend, kernel, generator):
    x, z, _, bw = random_problem(97, 129, 17, 1, generator=generator)
    skip_unless_runs(backend, x, z, 0, kernel, op="kernel_matrix")
    k = kops.kernel_matrix(x, z, kernel, bw, backend=backend)
    assert k.shape == (97, 129)
    torch.testing.assert_close(k.double(), reference_kernel_matrix(x, z, kernel, bw), rtol=0, atol=1e-6)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("out_dtype", [torch.float32, torch.float16])
def test_accumulate_form(backend, out_dtype, generator):
    x, z, v, bw = random_problem(97, 1025, 59, 3, generator=generator)
    skip_unless_runs(backend, x, z, 3, "gaussian")
    start = torch.randn(97, 3, generator=generator).to(out_dtype)
    out = start.clone()
    returned = kops.kmv_accumulate(out, x, z, v, "gaussian", bw, alpha=-0.5, backend=backend)
    assert returned is out and out.dtype == out_dtype
    expected = start.double() - 0.5 * (reference_kernel_matrix(x, z, "gaussian", bw) @ v.double())
    atol = 1e-4 if out_dtype == torch.float32 else 1e-2
    torch.testing.assert_close(out.double(), expected, rtol=1e-3 if out_dtype == torch.float16 else 1e-5, atol=atol)

# ------------------------------------------------------------------------ NaN policy
@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("d", [3, 40])
def test_nan_policy(backend, d, generator):
    # a NaN in row i of x reaches row i only; one in z or v reaches every row
    x, z, v, bw = random_problem(20, 30, d, 2, generator=generator)
    skip_unless_runs(backend, x, z, 2, "laplacian")
    x[3, 1] = float("nan")
    out = kops.kmv(x, z, v, "laplacian", bw, backend=backend)
    rows = torch.arange(20) != 3
    assert torch.isnan(out[3]).all() and torch.isfinite(out[rows]).all()
    assert_kmv_close(out[rows], x[rows], z, v, "laplacian", bw)
    z[5, 0] = float("inf")
    assert torch.isnan(kops.kmv(x[rows], z, v, "laplacian", bw, backend=backend)).all()
    skip_unless_runs(backend, x, z, 0, "laplacian", op="kernel_matrix")
    k = kops.kernel_matrix(x, z, "laplacian", bw, backend=backend)
    assert torch.isnan(k[3]).all() and torch.isnan(k[:, 5]).all()
    cols = torch.arange(30) != 5
    assert torch.isfinite(k[rows][:, cols]).all()


# ------------------------------------------------------------------------- gradients
def _leaves(*tensors):
    return [t.detach().clone().requires_grad_(True) for t in tensors]


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("n,m,d,c", [(97, 130, 59, 3), (130, 97, 3, 1), (1, 97, 200, 2)])
def test_gradients_match_float64_reference(backend, kernel, n, m, d, c, generator):
    x, z, v, bw = random_problem(n, m, d, c, generator=generator)
    skip_unless_runs(backend, x, z, c, kernel, op="kmv_grad_xz")
    g = torch.randn(n, c, generator=generator)
    x, z, v = _leaves(x, z, v)
    kops.kmv(x, z, v, kernel, bw, backend=backend).backward(g)
    ref = reference_kmv_grads(x, z, v, g, kernel, bw)
    for got, want, name in zip((x.grad, z.grad, v.grad), ref, "xzv"):
        err = (got.double() - want).norm() / want.norm()
        assert err < 1e-4, f"grad {name}: relative error {err:.2e}"


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("kernel", KERNELS)
def test_gradients_at_coincident_points_are_finite_and_agree(backend, kernel, generator):
    # x is z (exact diagonal) and z holds copies of rows of x: the Laplacian's derivative is
    # taken as 0 there on every backend (the symmetric subgradient)
    x, z, v, bw = random_problem(40, 30, 5, 2, dtype=torch.float64, generator=generator)
    skip_unless_runs(backend, x, z, 2, kernel, op="kmv_grad_xz")
    z[:10] = x[:10]
    got = _leaves(x, z, v)
    kops.kmv(*got, kernel, bw, backend=backend).sum().backward()
    want = _leaves(x, z, v)
    kops.kmv(*want, kernel, bw, backend="torch").sum().backward()
    for a, b in zip(got, want):
        assert torch.isfinite(a.grad).all()
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-7, atol=1e-9)
    same = _leaves(x)[0]
    kops.kmv(same, same, v[:1].expand(40, 2), kernel, bw, backend=backend).sum().backward()
    assert torch.isfinite(same.grad).all()


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_bandwidth_gradient(backend, generator):
    # for k(|x - z| / s): d/ds = -(<x, grad_x> + <z, grad_z>) / s, on every backend
    x, z, v, bw = random_problem(30, 40, 6, 2, dtype=torch.float64, generator=generator)
    skip_unless_runs(backend, x, z, 2, "matern52", op="kmv_grad_xz")
    x, z = _leaves(x, z)
    s = torch.tensor(bw, dtype=torch.float64, requires_grad=True)
    kops.kmv(x, z, v, "matern52", s, backend=backend).sum().backward()
    want = -((x * x.grad).sum() + (z * z.grad).sum()) / bw
    torch.testing.assert_close(s.grad, want)


# ------------------------------------------------------------------------ aliasing
@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("alias", ["v", "x", "z", "x_and_z"])
def test_accumulate_into_an_input(backend, alias, generator):
    # out shares memory with an input: the result must be as if the inputs had been copied
    n = 40
    x = torch.randn(n, 3, dtype=torch.float64, generator=generator)
    skip_unless_runs(backend, x, x, 3, "gaussian")
    if alias == "v":  # out is v (x is z so that shapes match)
        x_, z_, v_ = x, x, torch.randn(n, 3, dtype=torch.float64, generator=generator)
        out = v_
    else:  # out is a view of x's (or z's) memory
        buf = torch.randn(n, 3, dtype=torch.float64, generator=generator)
        v_ = torch.randn(n, 3, dtype=torch.float64, generator=generator)
        x_ = buf if alias in ("x", "x_and_z") else x
        z_ = buf if alias in ("z", "x_and_z") else x
        out = buf
    want = out.clone() + 0.5 * reference_kmv(x_.clone(), z_.clone(), v_.clone(), "gaussian", 1.5).to(out.dtype)
    kops.kmv_accumulate(out, x_, z_, v_, "gaussian", 1.5, alpha=0.5, backend=backend)
    torch.testing.assert_close(out, want, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_accumulate_into_a_view_of_v(backend, generator):
    # out is the first column of v (a strided, partly overlapping view)
    x = torch.randn(30, 4, dtype=torch.float64, generator=generator)
    v = torch.randn(30, 2, dtype=torch.float64, generator=generator)
    skip_unless_runs(backend, x, x, 1, "laplacian")
    out = v[:, 0]
    want = out.clone() + reference_kmv(x, x, v[:, 1].clone(), "laplacian", 2.0).to(out.dtype)
    kops.kmv_accumulate(out, x, x, v[:, 1], "laplacian", 2.0, backend=backend)
    torch.testing.assert_close(v[:, 0], want, rtol=1e-9, atol=1e-9)
