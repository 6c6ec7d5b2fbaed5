"""Every backend on a CUDA device against the float64 reference (run by bench/gpu_check.sh)."""
import pytest
import torch

import kops
from kops.testing import assert_kmv_close, kmv_error, random_problem, reference_kmv_grads, tolerance

from helpers import ALL_BACKENDS, skip_unless_runs

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("kernel", ["gaussian", "laplacian"])
@pytest.mark.parametrize("dtype,precision", [(torch.float32, "ieee"), (torch.float32, "tf32"), (torch.float32, "bf16"),
                                             (torch.float64, "ieee"), (torch.float16, "ieee"), (torch.bfloat16, "ieee")])
@pytest.mark.parametrize("n,m,d,c", [(1, 1025, 3, 1), (1025, 97, 59, 3), (4097, 3001, 784, 17), (3001, 4097, 16, 129),
                                     (2049, 2049, 1, 1024)])
def test_kmv_on_gpu(backend, kernel, dtype, precision, n, m, d, c, generator):
    x, z, v, bw = random_problem(n, m, d, c, dtype=dtype, device="cuda", generator=generator)
    skip_unless_runs(backend, x, z, c, kernel, precision)
    out = kops.kmv(x, z, v, kernel, bw, precision=precision, backend=backend)
    rows = slice(0, 256)
    err = kmv_error(out[rows].cpu(), x[rows].cpu(), z.cpu(), v.cpu(), kernel, bw)
    assert err <= tolerance(dtype, precision), f"error {err:.2e}"


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_more_than_2_to_the_31_pairs(backend, generator):
    # n * m > 2^31: 32-bit offsets would wrap.
    x, z, v, bw = random_problem(70000, 40000, 3, 1, device="cuda", generator=generator)
    skip_unless_runs(backend, x, z, 1, "gaussian")
    if backend == "torch":
        pytest.skip("the reference backend has no 32-bit offsets to test")
    out = kops.kmv(x, z, v, "gaussian", bw, backend=backend)
    rows = torch.cat([torch.arange(64), torch.arange(70000 - 64, 70000)])
    assert_kmv_close(out[rows].cpu(), x[rows].cpu(), z.cpu(), v.cpu(), "gaussian", bw)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("kernel", ["gaussian", "laplacian"])
def test_gradients_on_gpu(backend, kernel, generator):
    x, z, v, bw = random_problem(1025, 777, 59, 3, device="cuda", generator=generator)
    skip_unless_runs(backend, x, z, 3, kernel, op="kmv_grad_xz")
    g = torch.randn(1025, 3, device="cuda")
    x, z, v = (t.clone().requires_grad_(True) for t in (x, z, v))
    kops.kmv(x, z, v, kernel, bw, backend=backend).backward(g)
    ref = reference_kmv_grads(x.cpu(), z.cpu(), v.cpu(), g.cpu(), kernel, bw)
    for got, want in zip((x.grad, z.grad, v.grad), ref):
        assert ((got.double().cpu() - want).norm() / want.norm()) < 1e-4


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_accumulate_on_gpu(backend, generator):
    x, z, v, bw = random_problem(3001, 2047, 64, 10, device="cuda", generator=generator)
    skip_unless_runs(backend, x, z, 10, "laplacian")
    out = torch.ones(3001, 10, device="cuda")
    kops.kmv_accumulate(out, x, z, v, "laplacian", bw, alpha=2.0, backend=backend)
    expected = 1 + 2 * kops.kmv(x.double(), z.double(), v.double(), "laplacian", bw, backend="torch")
    torch.testing.assert_close(out.double(), expected, rtol=1e-4, atol=1e-3)


def test_auto_picks_a_fused_backend_on_gpu():
    x = torch.randn(10, 64, device="cuda")
    from kops.backends.base import Case
    from kops.dispatch import select_backend

    chosen = select_backend("auto", Case("kmv", x.device, x.dtype, 10, 10, 64, 1, "gaussian", "ieee"))
    assert chosen.name in ("cuda", "triton")
