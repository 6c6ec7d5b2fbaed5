"""kops.KernelOperator: products, transpose, diagonal, to_dense, gradients, moves and errors,
against float64 references by direct differences (kops.testing)."""
import pytest
import torch

import kops
from kops.testing import reference_kernel_matrix

KERNELS = ("gaussian", "laplacian", "matern32", "matern52", "cauchy")
F64 = torch.float64


def _points(generator, *shape, dtype=F64):
    return torch.randn(*shape, generator=generator, dtype=F64).to(dtype)


def _dense_reference(x, z, kernel, bandwidth, ridge=0.0):
    """K(x, z) + r I in float64; a (d,) bandwidth divides the features first."""
    if isinstance(bandwidth, torch.Tensor):
        ell = bandwidth.detach().to(F64)
        k = reference_kernel_matrix(x.detach().to(F64) / ell, z.detach().to(F64) / ell, kernel, 1.0)
    else:
        k = reference_kernel_matrix(x, z, kernel, bandwidth)
    if ridge:
        k = k + ridge * torch.eye(k.shape[0], dtype=F64)
    return k


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("columns", [None, 3])
def test_products_match_the_dense_float64_matrix(kernel, columns, generator):
    n, m, d = 37, 53, 5
    x, z = _points(generator, n, d), _points(generator, m, d)
    A = kops.KernelOperator(x, z, kernel, bandwidth=1.7)
    K = _dense_reference(x, z, kernel, 1.7)
    v = _points(generator, m) if columns is None else _points(generator, m, columns)
    u = _points(generator, n) if columns is None else _points(generator, n, columns)
    torch.testing.assert_close(A @ v, K @ v, rtol=1e-11, atol=1e-11)
    torch.testing.assert_close(A.matmul(v), K @ v, rtol=1e-11, atol=1e-11)
    torch.testing.assert_close(A.rmatmul(u), K.T @ u, rtol=1e-11, atol=1e-11)
    torch.testing.assert_close(A.T @ u, K.T @ u, rtol=1e-11, atol=1e-11)
    row = u if u.dim() == 1 else u.T  # u @ A for a vector, or for c row vectors
    torch.testing.assert_close(row @ A, row @ K, rtol=1e-11, atol=1e-11)
    torch.testing.assert_close(A.to_dense(), K, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kernel", ("gaussian", "matern32"))
def test_ridge_adds_r_times_the_identity_and_ard_bandwidths(kernel, generator):
    n, d = 41, 4
    x = _points(generator, n, d)
    ell = torch.rand(d, generator=generator, dtype=F64) + 0.5
    A = kops.KernelOperator(x, kernel=kernel, bandwidth=ell, ridge=0.3)
    K = _dense_reference(x, x, kernel, ell, ridge=0.3)
    v = _points(generator, n, 2)
    torch.testing.assert_close(A @ v, K @ v, rtol=1e-11, atol=1e-11)
    torch.testing.assert_close(A.T @ v, K.T @ v, rtol=1e-11, atol=1e-11)
    torch.testing.assert_close(A.to_dense(), K, rtol=1e-12, atol=1e-12)
    assert A.is_symmetric and A.is_square and A.T.is_symmetric


@pytest.mark.parametrize("kernel", KERNELS)
def test_diagonal_is_exact(kernel, generator):
    n, d = 29, 3
    x, z = _points(generator, n, d), _points(generator, n, d)
    sym = kops.KernelOperator(x, kernel=kernel, bandwidth=0.9, ridge=0.25)
    assert torch.equal(sym.diagonal(), torch.full((n,), 1.25, dtype=F64))
    ell = torch.rand(d, generator=generator, dtype=F64) + 0.5
    square = kops.KernelOperator(x, z, kernel, bandwidth=ell, ridge=0.1)
    torch.testing.assert_close(square.diagonal(), _dense_reference(x, z, kernel, ell, 0.1).diagonal(),
                               rtol=1e-13, atol=1e-14)
    with pytest.raises(ValueError, match="square"):
        kops.KernelOperator(x, z[:5], kernel, bandwidth=1.0).diagonal()


def test_to_dense_refuses_above_the_budget_naming_the_size(generator):
    x = _points(generator, 300, 2)
    A = kops.KernelOperator(x, kernel="gaussian", bandwidth=1.0)
    with kops.memory_budget("100KB"):
        with pytest.raises(MemoryError, match=r"300 x 300 torch.float64 matrix \(0.7 MiB\)"):
            A.to_dense()
    with pytest.raises(MemoryError, match="300 x 300"):
        A.to_dense(max_bytes=1000)
    assert A.to_dense(max_bytes="1MB").shape == (300, 300)


@pytest.mark.parametrize("kernel", ("gaussian", "laplacian", "matern52"))
@pytest.mark.parametrize("ard", [False, True])
def test_gradients_wrt_points_and_bandwidth_pass_gradcheck(kernel, ard, generator):
    n, m, d = 6, 5, 3
    x = _points(generator, n, d).requires_grad_(True)
    z = _points(generator, m, d).requires_grad_(True)
    v = _points(generator, m, 2).requires_grad_(True)
    s = (torch.rand(d if ard else (), generator=generator, dtype=F64) + 0.8).requires_grad_(True)

    def forward(x, z, v, s):
        return kops.KernelOperator(x, z, kernel, bandwidth=s) @ v

    def transposed(x, z, v, s):
        return kops.KernelOperator(z, x, kernel, bandwidth=s).T @ v

    assert torch.autograd.gradcheck(forward, (x, z, v, s))
    assert torch.autograd.gradcheck(transposed, (x, z, v, s))


def test_gradient_of_a_square_ridge_operator_and_its_diagonal(generator):
    n, d = 7, 2
    x = _points(generator, n, d).requires_grad_(True)
    y = _points(generator, n, d).requires_grad_(True)
    s = torch.tensor(1.3, dtype=F64, requires_grad=True)
    v = _points(generator, n)
    assert torch.autograd.gradcheck(lambda x, s: kops.KernelOperator(x, kernel="matern32", bandwidth=s, ridge=0.5) @ v,
                                    (x, s))
    assert torch.autograd.gradcheck(lambda x, y, s: kops.KernelOperator(x, y, "gaussian", bandwidth=s).diagonal(),
                                    (x, y, s))


def test_dtype_moves_keep_the_gradient_path(generator):
    x = _points(generator, 20, 3, dtype=torch.float32).requires_grad_(True)
    s = torch.tensor(1.5, requires_grad=True)
    A = kops.KernelOperator(x, kernel="gaussian", bandwidth=s)
    B = A.to(F64)
    assert (B.dtype, B.device, B.shape, B.is_symmetric) == (F64, torch.device("cpu"), torch.Size((20, 20)), True)
    v = _points(generator, 20)
    out = B @ v
    torch.testing.assert_close(out, _dense_reference(x, x, "gaussian", 1.5) @ v, rtol=1e-11, atol=1e-11)
    out.sum().backward()
    assert x.grad is not None and x.grad.dtype == torch.float32 and s.grad is not None
    with pytest.raises(TypeError, match="dtype"):
        A.to(torch.int64)
    with pytest.raises(TypeError, match="dtype torch.float64 but the operator has torch.float32"):
        A @ v


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_device_moves(generator):
    x = _points(generator, 33, 4)
    A = kops.KernelOperator(x, kernel="laplacian", bandwidth=2.0, ridge=0.1).to("cuda")
    assert A.device.type == "cuda"
    v = _points(generator, 33)
    torch.testing.assert_close((A @ v.cuda()).cpu(), _dense_reference(x, x, "laplacian", 2.0, 0.1) @ v,
                               rtol=1e-10, atol=1e-10)


def test_clear_errors_for_bad_inputs(generator):
    x, z = _points(generator, 10, 3), _points(generator, 8, 3)
    A = kops.KernelOperator(x, z, "gaussian", bandwidth=1.0)
    with pytest.raises(ValueError, match=r"v must have shape \(8,\) or \(8, c\).*got \(10,\)"):
        A @ _points(generator, 10)
    with pytest.raises(ValueError, match=r"u must have shape \(10,\)"):
        A.rmatmul(_points(generator, 8))
    with pytest.raises(ValueError, match="v must have shape"):
        A @ _points(generator, 8, 2, 2)
    with pytest.raises(ValueError, match="same number of features"):
        kops.KernelOperator(x, _points(generator, 8, 4), "gaussian", bandwidth=1.0)
    with pytest.raises(TypeError, match="z has dtype"):
        kops.KernelOperator(x, z.float(), "gaussian", bandwidth=1.0)
    with pytest.raises(ValueError, match="ridge = 0.1 needs a square operator"):
        kops.KernelOperator(x, z, "gaussian", bandwidth=1.0, ridge=0.1)
    with pytest.raises(ValueError, match="ridge"):
        kops.KernelOperator(x, kernel="gaussian", bandwidth=1.0, ridge=-1.0)
    with pytest.raises(ValueError, match="3 lengthscales"):
        kops.KernelOperator(_points(generator, 5, 2), kernel="gaussian", bandwidth=torch.ones(3, dtype=F64))
    with pytest.raises(ValueError, match="bandwidth"):
        kops.KernelOperator(x, kernel="gaussian", bandwidth=-1.0)
    with pytest.raises(ValueError, match="unknown kernel"):
        kops.KernelOperator(x, kernel="nope", bandwidth=1.0)
    with pytest.raises(ValueError, match="contains NaN"):
        kops.KernelOperator(x.clone().fill_(float("nan")), kernel="gaussian", bandwidth=1.0, check_finite=True)
    with pytest.raises(ValueError, match="x must be 2-D"):
        kops.KernelOperator(x[0], kernel="gaussian", bandwidth=1.0)


def test_kernel_objects_properties_and_repr(generator):
    x = _points(generator, 12, 2)
    A = kops.KernelOperator(x, kernel=kops.Matern52(2.0), ridge=0.5)
    assert A.bandwidth == 2.0 and A.kernel.name == "matern52" and A.ridge == 0.5
    assert A.size() == (12, 12) and A.size(0) == 12
    assert repr(A) == "KernelOperator(12 x 12, matern52, bandwidth=2, ridge=0.5, torch.float64, cpu)"
    empty = kops.KernelOperator(x[:0], x, "gaussian", bandwidth=1.0)
    assert (empty @ _points(generator, 12, 3)).shape == (0, 3)
