"""K(x, z) @ v against the float64 reference, on every backend that runs here."""
import pytest
import torch

import kops
from kops.testing import assert_kmv_close, kmv_error, random_problem, reference_kernel_matrix

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


@pytest.mark.parametrize("precision", ["tf32", "bf16"])
def test_reduced_precision_modes_really_round(precision, generator):
    # The reference backend emulates tensor-core rounding: its error must be of the order
    # of that rounding, far above the exact mode's.
    x, z, v, bw = random_problem(200, 300, 59, 2, generator=generator)
    exact = kmv_error(kops.kmv(x, z, v, "gaussian", bw, backend="torch"), x, z, v, "gaussian", bw)
    rounded = kmv_error(kops.kmv(x, z, v, "gaussian", bw, precision=precision, backend="torch"),
                        x, z, v, "gaussian", bw)
    unit = {"tf32": 2.0**-11, "bf16": 2.0**-9}[precision]
    assert rounded > 20 * exact
    assert unit / 16 < rounded < 16 * unit


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
def test_same_tensor_gives_exact_ones_on_the_diagonal(backend, generator):
    x = torch.randn(300, 59, generator=generator) * 30 + 500  # cancellation-prone data
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


def test_accumulate_into_a_vector_and_into_a_view(generator):
    x, z, v, bw = random_problem(50, 60, 4, None, generator=generator)
    out = torch.zeros(50)
    kops.kmv_accumulate(out, x, z, v, "gaussian", bw)
    kops.kmv_accumulate(out, x, z, v, "gaussian", bw)
    torch.testing.assert_close(out, 2 * kops.kmv(x, z, v, "gaussian", bw))
    big = torch.zeros(50, 4)
    kops.kmv_accumulate(big[:, 1], x, z, v, "gaussian", bw)  # non-contiguous out
    torch.testing.assert_close(big[:, 1], kops.kmv(x, z, v, "gaussian", bw))
    assert torch.equal(big[:, [0, 2, 3]], torch.zeros(50, 3))


def test_kernel_objects_and_names_agree(generator):
    x, z, v, bw = random_problem(20, 30, 3, 2, generator=generator)
    by_name = kops.kmv(x, z, v, "gaussian", bw)
    torch.testing.assert_close(kops.kmv(x, z, v, kops.Gaussian(bw)), by_name)
    torch.testing.assert_close(kops.Gaussian(bw).mv(x, z, v), by_name)
    torch.testing.assert_close(kops.kmv(x, z, v, "rbf", bw), by_name)
    torch.testing.assert_close(kops.Laplacian(bw)(x, z), kops.kernel_matrix(x, z, "laplacian", bw))
    # Formulas, checked on one pair against hand-written expressions.
    a, b = torch.tensor([[0.0, 0.0]], dtype=torch.float64), torch.tensor([[3.0, 4.0]], dtype=torch.float64)
    s = 2.0
    assert kops.kernel_matrix(a, b, "gaussian", s).item() == pytest.approx(torch.exp(torch.tensor(-25 / 8)).item())
    assert kops.kernel_matrix(a, b, "laplacian", s).item() == pytest.approx(torch.exp(torch.tensor(-2.5)).item())
    t = 3**0.5 * 5 / s
    assert kops.kernel_matrix(a, b, "matern32", s).item() == pytest.approx((1 + t) * torch.exp(torch.tensor(-t)).item())
    t = 5**0.5 * 5 / s
    assert kops.kernel_matrix(a, b, "matern52", s).item() == pytest.approx(
        (1 + t + t * t / 3) * torch.exp(torch.tensor(-t)).item())
