"""The native CUDA backend ("cuda", csrc/cuda) against the float64 reference (needs a GPU).

Run by bench/gpu_check.sh (``pytest -m gpu``); skipped on machines without a CUDA device and
when the extension was built without CUDA. About 90 tests; the float64 references run on the
CPU on a few hundred rows each, so the file should take well under a minute on a GPU machine. Sizes are awkward on purpose: partial row blocks
and z tiles, d just below / above the compiled buckets (3, 4, 8, 16, 32, 64), c = 1 and c
across the 16-column chunks, and m large enough for the z range to be split over blocks.
"""
import pytest
import torch

import kops
from kops.dispatch import backends, select_backend
from kops.kernels import resolve_kernel
from kops.backends.base import Case
from kops.testing import assert_kmv_close, kmv_error, random_problem, reference_kmv_grads, tolerance

pytestmark = pytest.mark.gpu

KERNELS = tuple(kops.KERNELS)  # the kernel table: a new kernel is tested everywhere


@pytest.fixture(autouse=True)
def _needs_cuda_backend():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    reason = backends()["cuda"].unavailable_reason()
    if reason is not None:
        pytest.skip(f"CUDA backend unavailable: {reason}")


def _check_rows(out, x, z, v, kernel, bw, rows=None, factor=1.0):
    """Compare the given rows of a GPU result with the float64 reference on the CPU."""
    if rows is None:
        rows = torch.arange(min(out.shape[0], 200))
    rows = rows.to(x.device)
    assert_kmv_close(out[rows].cpu(), x[rows].cpu(), z.cpu(), v.cpu(), kernel, bw, factor=factor)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n,m,d,c", [
    (1, 1, 1, 1), (1025, 97, 4, 2), (3001, 2049, 17, 10), (257, 5000, 33, 3), (1030, 777, 64, 16),
    (70, 8200, 2, 33),
])
def test_kmv_matches_reference(kernel, dtype, n, m, d, c, generator):
    x, z, v, bw = random_problem(n, m, d, c, dtype=dtype, device="cuda", generator=generator)
    out = kops.kmv(x, z, v, kernel, bw, backend="cuda")
    assert out.dtype == dtype and out.shape == (n, c)
    _check_rows(out, x, z, v, kernel, bw)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_vector_v_and_offset_data(dtype, generator):
    # Far from the origin: direct differences cannot cancel, unlike the GEMM trick.
    x, z, v, bw = random_problem(2000, 3000, 3, None, dtype=dtype, device="cuda", generator=generator,
                                 offset=1000.0)
    out = kops.kmv(x, z, v, "gaussian", bw, backend="cuda")
    assert out.shape == (2000,)
    _check_rows(out, x, z, v, "gaussian", bw)


def test_non_contiguous_inputs(generator):
    x, z, v, bw = random_problem(1000, 1500, 7, 5, device="cuda", generator=generator)
    xt = x.T.contiguous().T                      # column-major
    zs = torch.stack([z, z], 2).reshape(1500, 14)[:, ::2]  # z with column stride 2
    vs = torch.stack([v, v], 1).reshape(3000, 5)[::2]      # v with row stride 2c
    assert torch.equal(zs, z) and torch.equal(vs, v)
    assert not (xt.is_contiguous() or zs.is_contiguous() or vs.is_contiguous())
    out = kops.kmv(xt, zs, vs, "laplacian", bw, backend="cuda")
    _check_rows(out, x, z, v, "laplacian", bw)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_accumulate(dtype, generator):
    x, z, v, bw = random_problem(3001, 2047, 30, 10, dtype=dtype, device="cuda", generator=generator)
    out = torch.full((3001, 10), 2.0, dtype=dtype, device="cuda")
    kops.kmv_accumulate(out, x, z, v, "laplacian", bw, alpha=-0.5, backend="cuda")
    x64, z64, v64 = x.double(), z.double(), v.double()
    want = 2.0 - 0.5 * kops.kmv(x64, z64, v64, "laplacian", bw, backend="torch")
    scale = 2.0 + 0.5 * kops.kmv(x64, z64, v64.abs(), "laplacian", bw, backend="torch")
    err = ((out.double() - want).abs() / scale).max().item()
    assert err <= tolerance(dtype), f"accumulate error {err:.2e}"


def test_same_points_gives_exact_zero_distances(generator):
    x, _, v, bw = random_problem(777, 777, 9, 2, device="cuda", generator=generator)
    out = kops.kmv(x, x, v, "laplacian", bw, backend="cuda")
    _check_rows(out, x, x, v, "laplacian", bw)


def test_more_than_2_to_the_32_pairs(generator):
    # n * m = 4.3e9 pairs: pair counts and row offsets beyond 32 bits.
    n, m = 2**17 + 3, 2**15 + 5
    x, z, v, bw = random_problem(n, m, 3, 1, device="cuda", generator=generator)
    out = kops.kmv(x, z, v, "gaussian", bw, backend="cuda")
    rows = torch.cat([torch.arange(100), torch.arange(n - 100, n)])
    _check_rows(out, x, z, v, "gaussian", bw, rows=rows)


def test_element_offsets_beyond_2_to_the_31():
    # x is a view whose row stride puts its last rows beyond 2^31 elements (8.6 GB buffer).
    free, _ = torch.cuda.mem_get_info()
    n, stride, d = 2**17 + 2, 2**14, 4
    if free < 12 * 2**30:
        pytest.skip("needs 12 GiB of free GPU memory")
    g = torch.Generator(device="cuda").manual_seed(0)
    buf = torch.empty(n, stride, device="cuda")
    buf[:, :d] = torch.randn(n, d, device="cuda", generator=g)
    x = buf[:, :d]
    assert (n - 1) * x.stride(0) > 2**31
    z = torch.randn(257, d, device="cuda", generator=g)
    v = torch.randn(257, 2, device="cuda", generator=g)
    out = kops.kmv(x, z, v, "gaussian", 2.0, backend="cuda")
    rows = torch.arange(n - 200, n)
    _check_rows(out, x, z, v, "gaussian", 2.0, rows=rows)
    del buf


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n,m,d,c", [(300, 5000, 3, 1), (1025, 700, 32, 16),
                                     (200, 300, 40, 3)])  # the last: torch fallback (d > 32)
def test_gradients_match_reference(kernel, dtype, n, m, d, c, generator):
    x, z, v, bw = random_problem(n, m, d, c, dtype=dtype, device="cuda", generator=generator)
    z[:5] = x[:5]  # coincident points: the Laplacian's gradient there is 0, never NaN
    g = torch.randn(n, c, dtype=dtype, device="cuda")
    gx, gz = torch.ops.kops.kmv_grad_xz(x, z, v, g, kernel, bw, "ieee", "cuda")
    want_x, want_z, _ = reference_kmv_grads(x.cpu(), z.cpu(), v.cpu(), g.cpu(), kernel, bw)
    tol = 1e-4 if dtype == torch.float32 else 1e-10  # gradient sums cancel: norm-wise bound
    for got, want in ((gx, want_x), (gz, want_z)):
        assert torch.isfinite(got).all()
        assert ((got.double().cpu() - want).norm() / want.norm()) < tol


def test_gradcheck_float64():
    g = torch.Generator().manual_seed(1)
    x, z, v, bw = random_problem(13, 11, 3, 2, dtype=torch.float64, device="cuda", generator=g)
    args = [t.clone().requires_grad_(True) for t in (x, z, v)]
    assert torch.autograd.gradcheck(lambda a, b, c: kops.kmv(a, b, c, "gaussian", bw, backend="cuda"), args)


def test_auto_dispatch_prefers_cuda_in_its_range():
    for op, d, c in (("kmv", 16, 1), ("kmv", 64, 100), ("kmv_grad_xz", 32, 16)):
        case = Case(op, torch.device("cuda"), torch.float32, 1000, 1000, d, c, "gaussian", "ieee")
        assert select_backend("auto", case).name == "cuda"
    for other in (Case("kmv", torch.device("cuda"), torch.float32, 1000, 1000, 65, 1, "gaussian", "ieee"),
                  Case("kmv", torch.device("cuda"), torch.float16, 1000, 1000, 16, 1, "gaussian", "ieee"),
                  Case("kmv", torch.device("cuda"), torch.float32, 1000, 1000, 16, 1, "gaussian", "tf32"),
                  Case("kernel_matrix", torch.device("cuda"), torch.float32, 10, 10, 3, 0, "gaussian", "ieee"),
                  Case("kmv_grad_xz", torch.device("cuda"), torch.float32, 1000, 1000, 40, 1, "gaussian", "ieee")):
        assert select_backend("auto", other).name != "cuda"


def test_runs_on_the_current_stream(generator):
    x, z, v, bw = random_problem(2000, 3000, 8, 3, device="cuda", generator=generator)
    want = kops.kmv(x, z, v, "matern52", bw, backend="cuda")
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        got = kops.kmv(x, z, v, "matern52", bw, backend="cuda")
    torch.cuda.current_stream().wait_stream(stream)
    assert kmv_error(got[:200].cpu(), x[:200].cpu(), z.cpu(), v.cpu(), "matern52", bw) <= tolerance(torch.float32)
    assert torch.equal(got, want)


@pytest.mark.parametrize("n,m,c", [(100, 200_000, 1), (3000, 50_000, 20)])
def test_split_z_ranges_are_deterministic(n, m, c, generator):
    # Few rows and many z points: the z range is split over blocks and the partial sums are
    # reduced in a fixed order, so repeated calls agree bitwise.
    x, z, v, bw = random_problem(n, m, 5, c, device="cuda", generator=generator)
    first = kops.kmv(x, z, v, "gaussian", bw, backend="cuda")
    for _ in range(3):
        assert torch.equal(kops.kmv(x, z, v, "gaussian", bw, backend="cuda"), first)
    _check_rows(first, x, z, v, "gaussian", bw, rows=torch.arange(min(n, 100)))


def test_binding_errors_are_python_exceptions():
    x = torch.randn(10, 3, device="cuda")
    z = torch.randn(12, 4, device="cuda")
    v = torch.randn(12, 1, device="cuda")
    out = torch.zeros(10, 1, device="cuda")
    with pytest.raises(RuntimeError, match="columns"):
        torch.ops.kops._cuda_kmv(out, x, z, v, 0, 1.0, 1.0)
    with pytest.raises(RuntimeError, match="kernel"):
        torch.ops.kops._cuda_kmv(out, x, z[:, :3], v, 7, 1.0, 1.0)
    with pytest.raises(RuntimeError, match="float32 and float64"):
        torch.ops.kops._cuda_kmv(out.half(), x.half(), z[:, :3].half(), v.half(), 0, 1.0, 1.0)


def _time_ms(fn, repeats=5):
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    best = float("inf")
    for _ in range(repeats):
        start.record()
        fn()
        end.record()
        end.synchronize()
        best = min(best, start.elapsed_time(end))
    return best


@pytest.mark.parametrize("kernel", ["gaussian", "laplacian"])
@pytest.mark.parametrize("d", [3, 16, 64])
def test_register_blocking_beats_one_row_per_thread(kernel, d, generator, record_property):
    # The same kernel with one row per thread (the design register blocking improves on):
    # both must be right, and the blocked one must not be slower.
    n = m = 2**15
    x, z, v, bw = random_problem(n, m, d, 1, device="cuda", generator=generator)
    spec = resolve_kernel(kernel, bw)
    code = {"gaussian": 0, "laplacian": 1}[kernel]
    v2 = v.reshape(m, 1)
    outs = {}

    def run(baseline):
        out = torch.zeros(n, 1, device="cuda")
        torch.ops.kops._cuda_kmv(out, x, z, v2, code, spec.scale, 1.0, baseline)
        outs[baseline] = out

    times = {baseline: _time_ms(lambda: run(baseline)) for baseline in (False, True)}
    for out in outs.values():
        _check_rows(out, x, z, v2, kernel, bw, rows=torch.arange(32))
    pairs = float(n) * m
    record_property("gpairs_per_s_blocked", pairs / times[False] / 1e6)
    record_property("gpairs_per_s_one_row", pairs / times[True] / 1e6)
    print(f"{kernel} d={d}: register-blocked {pairs / times[False] / 1e6:.0f} Gpairs/s, "
          f"one row per thread {pairs / times[True] / 1e6:.0f} Gpairs/s "
          f"({times[True] / times[False]:.2f}x)")
    assert times[False] <= 1.1 * times[True]
