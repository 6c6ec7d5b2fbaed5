"""The native CPU backend ("cpu", csrc/cpu) against the float64 reference.

Sizes straddle the kernel's blocking (48-row blocks of 6-row groups, 192-row blocks from
d = 256, tiles of 256 float / 128 double columns, panels of 16 / 32 / 64 columns, feature
chunks of 64 to 512, the direct-differences threshold d <= 4) and its split of Z when there are few row blocks;
inputs come with awkward strides; every instruction-set variant this CPU can run is tested
(KOPS_CPU_ISA selects it).
"""
import pytest
import torch

import kops
from kops.backends.base import Case
from kops.dispatch import backends, select_backend
from kops.testing import (
    assert_kmv_close,
    kmv_error,
    random_problem,
    reference_kernel_matrix,
    reference_kmv_grads,
    tolerance,
)

KERNELS = list(kops.KERNELS)  # every kernel of the table, so a new one is tested on every ISA path

_cpu = backends().get("cpu")
pytestmark = pytest.mark.skipif(
    _cpu is None or _cpu.unavailable_reason() is not None,
    reason=f"native CPU backend unavailable: {None if _cpu is None else _cpu.unavailable_reason()}",
)


def _kmv(x, z, v, kernel, bw):
    return kops.kmv(x, z, v, kernel, bw, backend="cpu")


ISAS = ["avx512", "avx2", "portable"]


def _select_isa(monkeypatch, name):
    """Force instruction set ``name``; skip when this CPU (or build) cannot run it."""
    monkeypatch.setenv("KOPS_CPU_ISA", name)
    if _cpu.isa() != name:
        pytest.skip(f"the {name} kernels are not available here (running {_cpu.isa()})")


@pytest.fixture(params=ISAS)
def isa(request, monkeypatch):
    """Run a test with each instruction set the CPU supports."""
    _select_isa(monkeypatch, request.param)
    return request.param


def test_backend_reports_itself():
    assert _cpu.name == "cpu" and _cpu.unavailable_reason() is None
    assert _cpu.isa() in ISAS


def test_portable_variant_can_be_selected(monkeypatch):
    monkeypatch.setenv("KOPS_CPU_ISA", "portable")
    assert _cpu.isa() == "portable"


def test_vector_exp_is_accurate(isa):
    # the exp of every tile kernel, over its whole range: underflow to subnormals and 0, NaN kept
    for dtype, rtol in ((torch.float32, 3e-7), (torch.float64, 5e-16)):
        x = torch.cat([torch.linspace(0, 110, 100003, dtype=torch.float64), torch.tensor([0.0, 1e-30, 800.0])])
        got = torch.ops.kops._cpu_exp_neg(x.to(dtype)).double()
        want = torch.exp(-x.to(dtype).double())
        normal = want > torch.finfo(dtype).tiny
        rel = ((got - want).abs() / want)[normal].max()
        assert rel < rtol, f"{dtype}: max relative error {rel:.2e}"
        assert ((got - want).abs()[~normal] <= 2 * torch.finfo(dtype).smallest_normal * 2 ** -20).all() or dtype == torch.float64
        assert torch.isnan(torch.ops.kops._cpu_exp_neg(torch.tensor([float("nan")] * 17, dtype=dtype))).all()


def test_fma_rate_is_positive(isa):
    assert torch.ops.kops._cpu_fma_rate(False, 1000) > 0 and torch.ops.kops._cpu_fma_rate(True, 1000) > 0


# (n, m, d, c): 1 / 97 / 1025 rows, d = 1, 3, 59, 784, c = 1, 3, 17, both sides of the
# direct-differences threshold (d = 4, 5) and of the 48-row block / 256-column tile.
SHAPES = [
    (1, 1, 1, 1),
    (97, 1025, 3, 17),
    (1025, 97, 59, 3),
    (97, 97, 784, 1),
    (1, 1025, 784, 17),
    (97, 130, 2048, 2),
    (1025, 1, 59, 1),
    (1025, 257, 1, 3),
    (49, 257, 4, 3),
    (48, 256, 5, 1),
    (300, 1300, 130, 1),  # one column of V summed in the epilogue: several blocks, tiles, chunks
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n,m,d,c", SHAPES)
def test_matches_float64_reference(n, m, d, c, dtype, isa, generator):
    x, z, v, bw = random_problem(n, m, d, c, dtype=dtype, generator=generator)
    for kernel in KERNELS:
        out = _kmv(x, z, v, kernel, bw)
        assert out.shape == (n, c) and out.dtype == dtype
        assert_kmv_close(out, x, z, v, kernel, bw)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n,m,d,c", [(97, 1025, 59, 16), (13, 300, 784, 100), (200, 97, 3, 65)])
def test_wide_v_matches_float64_reference(n, m, d, c, dtype, isa, generator):
    # from c = 16 on the product with V runs on V row-major (c padded to whole vectors: 16,
    # 100 and 65 leave no, a 3-vector and a 1-vector remainder past the 4-vector chunks);
    # with 13 rows Z is split over the threads; V strided
    x, z, v, bw = random_problem(n, m, d, 2 * c, dtype=dtype, generator=generator)
    v = v[:, ::2]
    for kernel in KERNELS:
        assert_kmv_close(_kmv(x, z, v, kernel, bw), x, z, v, kernel, bw)
    # the same products as the narrow layout (c < 16, V transposed) in every precision mode:
    # the operands are rounded alike, only the order of the sums differs
    scale = (reference_kernel_matrix(x, z, "gaussian", bw) @ v.double().abs()).max()
    for precision in ("ieee", "tf32", "bf16"):
        wide = kops.kmv(x, z, v, "gaussian", bw, precision=precision, backend="cpu")
        narrow = torch.cat([kops.kmv(x, z, v[:, j : j + 8], "gaussian", bw, precision=precision, backend="cpu")
                            for j in range(0, c, 8)], 1)
        assert float((wide.double() - narrow.double()).abs().max() / scale) < 10 * tolerance(dtype), precision


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kernel", KERNELS)
def test_both_instruction_sets(kernel, dtype, isa, generator):
    x, z, v, bw = random_problem(61, 139, 7, 5, dtype=dtype, generator=generator)
    assert_kmv_close(_kmv(x, z, v, kernel, bw), x, z, v, kernel, bw)
    x, z, v, bw = random_problem(13, 21, 2, 1, dtype=dtype, generator=generator)
    assert_kmv_close(_kmv(x, z, v, kernel, bw), x, z, v, kernel, bw)


@pytest.mark.parametrize("d", [9, 300])  # 48-row and 192-row blocks
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_few_rows_many_centers_split_over_threads(threads, d, generator):
    # fewer row blocks than threads: Z is split and partial products are summed
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        x, z, v, bw = random_problem(5 if d < 100 else 200, 3001, d, 2, generator=generator)
        out = _kmv(x, z, v, "gaussian", bw)
    finally:
        torch.set_num_threads(previous)
    assert_kmv_close(out, x, z, v, "gaussian", bw)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_gradient_with_few_rows_split_over_threads(threads, generator):
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        x, z, v, bw = random_problem(5, 2100, 9, 2, dtype=torch.float64, generator=generator)
        g = torch.randn(5, 2, generator=generator, dtype=torch.float64)
        gx, gz = torch.ops.kops.kmv_grad_xz(x, z, v, g, "laplacian", bw, "ieee", "cpu")
    finally:
        torch.set_num_threads(previous)
    want_x, want_z, _ = reference_kmv_grads(x, z, v, g, "laplacian", bw)
    torch.testing.assert_close(gx, want_x, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(gz, want_z, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("d", [3, 32, 65])  # small-d pass; rows of 128 bytes (padded stride); generic
@pytest.mark.parametrize("threads", [1, 2])
def test_gradient_over_several_row_blocks_and_z_parts(threads, d, generator):
    # 1000 rows: three row blocks (the last partial), each over several tiles of Z, and on two
    # threads Z split into parts with per-worker sums of both gradients
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        x, z, v, bw = random_problem(1000, 700, d, 3, dtype=torch.float64, generator=generator)
        g = torch.randn(1000, 3, generator=generator, dtype=torch.float64)
        gx, gz = torch.ops.kops.kmv_grad_xz(x, z, v, g, "gaussian", bw, "ieee", "cpu")
    finally:
        torch.set_num_threads(previous)
    want_x, want_z, _ = reference_kmv_grads(x, z, v, g, "gaussian", bw)
    assert gx.is_contiguous() and gz.is_contiguous()
    torch.testing.assert_close(gx, want_x, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(gz, want_z, rtol=1e-9, atol=1e-12)


def test_far_from_origin_data_is_accurate(generator):
    x, z, v, bw = random_problem(97, 129, 59, 2, generator=generator, offset=1000.0 * 59**0.5)
    assert_kmv_close(_kmv(x, z, v, "gaussian", bw), x, z, v, "gaussian", bw)


def test_non_contiguous_transposed_and_expanded_inputs(isa, generator):
    x, z, v, bw = random_problem(97, 130, 11, 6, dtype=torch.float64, generator=generator)
    xt = x.t().contiguous().t()  # column-major
    zs = torch.cat([z, z], dim=1)[:, :11]  # row stride 22
    vs = v[:, ::2]  # column stride 2
    assert not (xt.is_contiguous() or zs.is_contiguous() or vs.is_contiguous())
    out = _kmv(xt, zs, vs, "laplacian", bw)
    assert_kmv_close(out, x, z, v[:, ::2], "laplacian", bw)
    # stride-0 (expanded) inputs: one point repeated, one column of v repeated
    xe = x[:1].expand(40, 11)
    ve = v[:, :1].expand(130, 3)
    out = _kmv(xe, z, ve, "gaussian", bw)
    assert_kmv_close(out, xe.contiguous(), z, ve.contiguous(), "gaussian", bw)
    assert torch.equal(out[0], out[-1])
    gx, gz = torch.ops.kops.kmv_grad_xz(xt, zs, vs, torch.ones(97, 6, dtype=torch.float64)[:, ::2], "gaussian", bw,
                                        "ieee", "cpu")
    want_x, want_z, _ = reference_kmv_grads(x, z, v[:, ::2], torch.ones(97, 3, dtype=torch.float64), "gaussian", bw)
    torch.testing.assert_close(gx, want_x, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(gz, want_z, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_are_upcast(dtype, generator):
    x, z, v, bw = random_problem(33, 70, 9, 2, dtype=dtype, generator=generator)
    out = _kmv(x, z, v, "gaussian", bw)
    assert out.dtype == dtype
    assert_kmv_close(out, x, z, v, "gaussian", bw)


@pytest.mark.parametrize("out_dtype", [torch.float32, torch.float64])
def test_accumulate_form(out_dtype, generator):
    x, z, v, bw = random_problem(97, 300, 17, 3, generator=generator)
    start = torch.randn(97, 3, generator=generator, dtype=out_dtype)
    out = start.clone()
    result = kops.kmv_accumulate(out, x, z, v, "matern52", bw, alpha=-0.75, backend="cpu")
    assert result is out
    ref = reference_kernel_matrix(x, z, "matern52", bw) @ v.double()
    expect = start.double() - 0.75 * ref
    scale = 0.75 * (reference_kernel_matrix(x, z, "matern52", bw) @ v.double().abs()) + start.double().abs()
    assert ((out.double() - expect).abs() / scale).max() < tolerance(torch.float32)
    # a non-contiguous out (a column slice of a wider buffer) is accumulated into as well
    wide = torch.zeros(97, 6, dtype=out_dtype)
    kops.kmv_accumulate(wide[:, ::2], x, z, v, "matern52", bw, backend="cpu")
    assert_kmv_close(wide[:, ::2].float(), x, z, v, "matern52", bw)
    assert (wide[:, 1::2] == 0).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("d", [3, 40])
def test_x_is_z_has_exact_diagonal(d, dtype, generator):
    # far from the origin the GEMM trick would leave rounding noise on the diagonal
    x, _, _, bw = random_problem(70, 1, d, 1, dtype=dtype, generator=generator, offset=300.0)
    eye = torch.eye(70, dtype=dtype)
    for kernel in KERNELS:
        k = _kmv(x, x, eye, kernel, bw)  # = K(x, x)
        assert (k.diagonal() == 1).all(), kernel
        assert kmv_error(k, x, x, eye, kernel, bw) <= tolerance(dtype)


def test_nan_reaches_only_its_row(generator):
    x, z, v, bw = random_problem(20, 30, 6, 2, generator=generator)
    x[3, 2] = float("nan")
    out = torch.zeros(20, 2)
    k = kops.Laplacian(bw)
    torch.ops.kops._cpu_kmv_accumulate(out, x, z, v, k.code, k.scale, 1.0)
    assert torch.isnan(out[3]).all()
    assert torch.isfinite(out[torch.arange(20) != 3]).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n,m,d,c", [(97, 130, 59, 3), (130, 97, 3, 1), (1, 300, 784, 2), (200, 7, 4, 17),
                                     (97, 65, 2048, 1), (1025, 33, 1, 2)])
def test_gradients_match_float64_reference(n, m, d, c, dtype, isa, generator):
    x, z, v, bw = random_problem(n, m, d, c, dtype=dtype, generator=generator)
    g = torch.randn(n, c, generator=generator, dtype=dtype)
    for kernel in KERNELS:
        gx, gz = torch.ops.kops.kmv_grad_xz(x, z, v, g, kernel, bw, "ieee", "cpu")
        assert gx.dtype == dtype and gz.dtype == dtype
        want_x, want_z, _ = reference_kmv_grads(x, z, v, g, kernel, bw)
        tol = 1e-4 if dtype == torch.float32 else 1e-9
        if kernel == "laplacian" and d == 1 and dtype == torch.float32:
            # rowsum(q) x - q z cancels where points nearly coincide and q ~ 1/r is large
            # (1025 points on a line): the closest pair of the draw sets the error, about
            # eps R / r_min (R the largest scaled coordinate) times at most 0.08 over 40 draws
            # (up to 9.6e-3 for r_min = 4e-6); a quarter of eps R / r_min bounds it
            r_min = float(torch.cdist(x.double(), z.double()).min()) / bw
            reach = float(torch.cat([x, z]).double().abs().max()) / bw
            tol = max(tol, 0.25 * torch.finfo(torch.float32).eps * reach / max(r_min, 1e-30))
        for got, want, name in ((gx, want_x, "x"), (gz, want_z, "z")):
            err = (got.double() - want).norm() / want.norm()
            assert err < tol, f"{kernel} grad {name}: relative error {err:.2e}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("d", [2, 4, 5, 6, 7, 8, 9, 16])
def test_small_d_gradients_match_float64_reference(d, dtype, isa, generator):
    # every width of the one-pass small-d products (d rounded up to 1, 2, 3, 4, 6, 8)
    # and the first d past them, with an odd row count (the single-row pass) and m not a
    # multiple of the panel width
    x, z, v, bw = random_problem(45, 83, d, 2, dtype=dtype, generator=generator)
    g = torch.randn(45, 2, generator=generator, dtype=dtype)
    tol = 1e-4 if dtype == torch.float32 else 1e-9
    for kernel in KERNELS:
        gx, gz = torch.ops.kops.kmv_grad_xz(x, z, v, g, kernel, bw, "ieee", "cpu")
        want_x, want_z, _ = reference_kmv_grads(x, z, v, g, kernel, bw)
        for got, want, name in ((gx, want_x, "x"), (gz, want_z, "z")):
            err = (got.double() - want).norm() / want.norm()
            assert err < tol, f"{kernel} d={d} grad {name}: relative error {err:.2e}"


@pytest.mark.parametrize("kernel", KERNELS)
def test_gradients_agree_with_torch_backend_at_coincident_points(kernel, generator):
    # x is z, and z repeats rows of x: the Laplacian's subgradient 0 and the noise floor
    x, _, v, bw = random_problem(60, 60, 9, 2, dtype=torch.float64, generator=generator)
    z = torch.cat([x[:20], torch.randn(40, 9, generator=generator, dtype=torch.float64)])
    g = torch.randn(60, 2, generator=generator, dtype=torch.float64)
    for zz in (x, z):
        got = torch.ops.kops.kmv_grad_xz(x, zz, v, g, kernel, bw, "ieee", "cpu")
        want = torch.ops.kops.kmv_grad_xz(x, zz, v, g, kernel, bw, "ieee", "torch")
        for a, b in zip(got, want):
            assert torch.isfinite(a).all()
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("kernel", KERNELS)
def test_gradcheck_through_cpu_backend(kernel, isa, generator):
    x, z, v, bw = random_problem(7, 9, 5, 2, dtype=torch.float64, generator=generator)
    leaves = [t.clone().requires_grad_(True) for t in (x, z, v)]
    assert torch.autograd.gradcheck(lambda a, b, c: kops.kmv(a, b, c, kernel, bw, backend="cpu"), leaves)


def test_auto_picks_cpu_where_preferred(monkeypatch):
    monkeypatch.setenv("KOPS_CPU_NATIVE", "always")
    case = Case("kmv", torch.device("cpu"), torch.float32, 20000, 20000, 64, 10, "gaussian", "ieee")
    assert _cpu.preferred(case)
    assert select_backend("auto", case).name == "cpu"
    monkeypatch.delenv("KOPS_CPU_NATIVE")
    grad = Case("kmv_grad_xz", torch.device("cpu"), torch.float64, 100, 100, 3, 1, "laplacian", "ieee")
    assert select_backend("auto", grad).name == "cpu"
    emulated = Case("kmv", torch.device("cpu"), torch.float32, 100, 100, 64, 1, "gaussian", "bf16")
    assert select_backend("auto", emulated).name == "cpu"
    kmat = Case("kernel_matrix", torch.device("cpu"), torch.float32, 10, 10, 3, 0, "gaussian", "ieee")
    assert select_backend("auto", kmat).name == "cpu"
    # what it does not support falls back to the reference
    gpu = Case("kmv", torch.device("cuda"), torch.float32, 10, 10, 3, 1, "gaussian", "ieee")
    assert "CPU tensors only" in _cpu.unsupported_reason(gpu)


def _case(op="kmv", d=64, n=20000, precision="ieee"):
    return Case(op, torch.device("cpu"), torch.float32, n, n, d, 1, "gaussian", precision)


def test_crossover_rule_follows_the_measured_ratios():
    from kops.backends.cpu_crossover import decide, interpolated_ratio

    # native faster at small d, torch faster past d = 256 (as measured on a CPU whose BLAS
    # outruns the native kernels at large d)
    ratios = {"kmv": {"16": 4.0, "256": 1.0, "1024": 0.5}, "kmv_grad_xz": {"16": 2.0, "256": 2.0, "1024": 2.0}}
    assert interpolated_ratio(ratios["kmv"], 16) == 4.0 and interpolated_ratio(ratios["kmv"], 1) == 4.0
    assert interpolated_ratio(ratios["kmv"], 4096) == 0.5
    assert abs(interpolated_ratio(ratios["kmv"], 64) - 2.5) < 1e-12  # halfway in log d
    assert decide(_case(d=64), ratios) and decide(_case(d=256), ratios)
    assert not decide(_case(d=512), ratios) and not decide(_case(d=2048), ratios)
    assert decide(_case("kmv_grad_xz", d=2048), ratios)
    # always native: small problems, emulated precision modes, kernel_matrix, no measurement
    assert decide(_case(d=2048, n=100), ratios)
    assert decide(_case(d=2048, precision="bf16"), ratios)
    assert decide(_case("kernel_matrix", d=2048), ratios)
    assert decide(_case(d=2048), None)


def test_crossover_override_and_cache(monkeypatch, tmp_path):
    from kops.backends import cpu_crossover

    monkeypatch.setenv("KOPS_CPU_NATIVE", "never")
    assert not _cpu.preferred(_case())
    monkeypatch.setenv("KOPS_CPU_NATIVE", "always")
    assert _cpu.preferred(_case(d=4096))
    # a cached calibration is read back instead of measured again
    monkeypatch.setenv("KOPS_CPU_NATIVE", "measure")
    monkeypatch.setenv("KOPS_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(cpu_crossover, "_cached", None)
    fake = {"key": cpu_crossover._key(), "kmv": {"16": 2.0, "1024": 0.25}, "kmv_grad_xz": {"16": 2.0}}
    cpu_crossover._cache_file().write_text(__import__("json").dumps(fake))
    monkeypatch.setattr(cpu_crossover, "calibrate", lambda: pytest.fail("measured despite the cache"))
    assert _cpu.preferred(_case(d=16)) and not _cpu.preferred(_case(d=1024))


def test_crossover_of_older_kernels_is_measured_again(monkeypatch, tmp_path):
    from kops.backends import cpu_crossover

    monkeypatch.setenv("KOPS_CPU_NATIVE", "measure")
    monkeypatch.setenv("KOPS_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(cpu_crossover, "_cached", None)
    key = cpu_crossover._key()
    revision = f"-r{cpu_crossover.KERNEL_REVISION}-"
    assert revision in key
    # a ratio measured with an older revision of the kernels, stored where this key looks
    stale = {"key": key.replace(revision, f"-r{cpu_crossover.KERNEL_REVISION - 1}-"),
             "kmv": {"16": 4.0}, "kmv_grad_xz": {"16": 4.0}}
    cpu_crossover._cache_file().write_text(__import__("json").dumps(stale))
    calls = []

    def fresh():
        calls.append(1)
        return {"key": key, "kmv": {"16": 0.5}, "kmv_grad_xz": {"16": 0.5}}

    monkeypatch.setattr(cpu_crossover, "calibrate", fresh)
    assert not _cpu.preferred(_case(d=16)) and calls == [1]
    assert not _cpu.preferred(_case(d=16)) and calls == [1]  # measured once, then cached


class _ScriptedCalls:
    """Two callables whose calls take scripted durations on a fake clock."""

    def __init__(self, reference_times, native_times):
        self.now = 0.0
        self.script = {"torch": list(reference_times), "native": list(native_times)}
        self.calls = {"torch": 0, "native": 0}

    def clock(self):
        return self.now

    def call(self, name):
        def run():
            times = self.script[name]
            self.now += times[min(self.calls[name], len(times) - 1)]
            self.calls[name] += 1
        return run


def test_calibration_ratio_survives_a_slowed_call():
    from kops.backends.cpu_crossover import measure_ratio, summarize

    # native twice as fast; one native call slowed 10x and one torch call 5x by other processes
    pairs = [(2.0, 1.0)] * 3 + [(2.0, 10.0), (10.0, 1.0)] + [(2.0, 1.0)] * 2
    s = summarize(pairs)
    assert s["ratio"] == 2.0 and s["best"] == 2.0 and s["settled"]
    # the fastest calls and the median disagree about the winner: not settled
    noisy = [(1.0, 3.0), (4.0, 0.9), (1.2, 3.0), (4.0, 3.0), (1.1, 2.5), (5.0, 1.0), (1.3, 2.0)]
    s = summarize(noisy)
    assert s["ratio"] < 1.0 < s["best"] and not s["settled"]
    # a near tie counts as settled either way
    assert summarize([(1.0, 1.02), (1.02, 1.0), (1.0, 1.01), (1.01, 1.0)])["settled"]
    # scattered first set: a second set is measured and used; the first call of each is a warm-up
    script = _ScriptedCalls([0.0] + [1.0, 4.0, 1.0, 4.0, 1.0, 4.0, 1.0] + [2.0] * 7,
                            [0.0] + [2.0, 1.0, 2.0, 1.0, 2.0, 1.0, 2.0] + [1.0] * 7)
    s = measure_ratio(script.call("torch"), script.call("native"), rounds=7, sets=3, clock=script.clock)
    assert s["rounds"] == 7 and script.calls == {"torch": 15, "native": 15}
    assert s["settled"] and s["ratio"] == 2.0
    # never settled: all sets pooled, marked unsettled
    script = _ScriptedCalls([0.0] + [1.0, 4.0] * 11, [0.0] + [2.0, 1.0] * 11)
    s = measure_ratio(script.call("torch"), script.call("native"), rounds=7, sets=3, clock=script.clock)
    assert s["rounds"] == 21 and not s["settled"]
    # past the deadline no further set starts
    script = _ScriptedCalls([0.0] + [1.0, 4.0] * 11, [0.0] + [2.0, 1.0] * 11)
    s = measure_ratio(script.call("torch"), script.call("native"), rounds=7, sets=3, clock=script.clock,
                      deadline=1.0)
    assert s["rounds"] == 7 and not s["settled"]
    # settled at once: one set only
    script = _ScriptedCalls([3.0] * 8, [1.0] * 8)
    s = measure_ratio(script.call("torch"), script.call("native"), rounds=7, sets=3, clock=script.clock)
    assert s["rounds"] == 7 and s["ratio"] == 3.0 and s["settled"]


def test_unsettled_calibration_is_measured_again_by_the_next_process(monkeypatch, tmp_path):
    from kops.backends import cpu_crossover

    monkeypatch.setenv("KOPS_CPU_NATIVE", "measure")
    monkeypatch.setenv("KOPS_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(cpu_crossover, "_cached", None)
    key = cpu_crossover._key()
    settled = {"ratio": 3.0, "best": 3.0, "settled": True, "rounds": 7}
    unsettled = {"ratio": 0.2, "best": 3.0, "settled": False, "rounds": 21}
    first = {"key": key, "kmv": {"16": 3.0}, "kmv_grad_xz": {"16": 0.2},
             "detail": {"kmv": {"16": settled}, "kmv_grad_xz": {"16": unsettled}},
             "unsettled": [["kmv_grad_xz", "16"]], "measurements": 1}
    cpu_crossover._cache_file().write_text(__import__("json").dumps(first))
    calls = []

    def again():  # this time the forward is disturbed and the gradient settles
        calls.append(1)
        return {"key": key, "kmv": {"16": 0.3}, "kmv_grad_xz": {"16": 2.5},
                "detail": {"kmv": {"16": dict(unsettled, ratio=0.3)},
                           "kmv_grad_xz": {"16": dict(settled, ratio=2.5)}},
                "unsettled": [["kmv", "16"]]}

    monkeypatch.setattr(cpu_crossover, "calibrate", again)
    data = cpu_crossover.measured()
    assert calls == [1] and data["measurements"] == 2
    # the settled forward ratio of the first process stands, the new settled gradient ratio is taken
    assert data["kmv"]["16"] == 3.0 and data["kmv_grad_xz"]["16"] == 2.5 and data["unsettled"] == []
    assert _cpu.preferred(_case("kmv_grad_xz", d=16)) and _cpu.preferred(_case(d=16))
    stored = __import__("json").loads(cpu_crossover._cache_file().read_text())
    assert stored["unsettled"] == [] and stored["measurements"] == 2
    # still unsettled after the allowed re-measurements: used as it is, not measured again
    monkeypatch.setattr(cpu_crossover, "_cached", None)
    cpu_crossover._cache_file().write_text(__import__("json").dumps(dict(first, measurements=3)))
    monkeypatch.setattr(cpu_crossover, "calibrate", lambda: pytest.fail("measured a third time"))
    assert cpu_crossover.measured()["kmv_grad_xz"]["16"] == 0.2


def test_auto_runs_the_native_kernel(monkeypatch, generator):
    calls = []
    original = _cpu.kmv

    def spy(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(_cpu, "kmv", spy)
    monkeypatch.delenv("KOPS_BACKEND", raising=False)
    x, z, v, bw = random_problem(30, 40, 5, 2, generator=generator)
    assert_kmv_close(kops.kmv(x, z, v, "gaussian", bw), x, z, v, "gaussian", bw)
    assert calls


def test_private_op_checks_its_arguments():
    x, z, v = torch.randn(4, 3), torch.randn(5, 3), torch.randn(5, 2)
    op = torch.ops.kops._cpu_kmv_accumulate
    with pytest.raises(RuntimeError, match="one dtype"):
        op(torch.zeros(4, 2), x, z, v.double(), 0, 1.0, 1.0)
    with pytest.raises(RuntimeError, match="same d"):
        op(torch.zeros(4, 2), x, torch.randn(5, 4), v, 0, 1.0, 1.0)
    with pytest.raises(RuntimeError, match="as many rows as z"):
        op(torch.zeros(4, 2), x, z, torch.randn(6, 2), 0, 1.0, 1.0)
    with pytest.raises(RuntimeError, match="contiguous"):
        op(torch.zeros(2, 4).t(), x, z, v, 0, 1.0, 1.0)
    with pytest.raises(RuntimeError, match="shape"):
        op(torch.zeros(4, 3), x, z, v, 0, 1.0, 1.0)
    with pytest.raises(RuntimeError, match="unknown kernel code"):
        op(torch.zeros(4, 2), x, z, v, 99, 1.0, 1.0)
    with pytest.raises(RuntimeError, match="scale"):
        op(torch.zeros(4, 2), x, z, v, 0, -1.0, 1.0)
    with pytest.raises(RuntimeError, match="float32 or float64"):
        op(torch.zeros(4, 2, dtype=torch.half), x.half(), z.half(), v.half(), 0, 1.0, 1.0)
    with pytest.raises(RuntimeError, match="grad_out must have shape"):
        torch.ops.kops._cpu_kmv_grad_xz(x, z, v, torch.randn(4, 3), 0, 1.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("precision", ["tf32", "bf16"])
def test_reduced_precision_modes_round_like_the_reference(precision, dtype, generator):
    x, z, v, bw = random_problem(97, 300, 59, 4, dtype=dtype, generator=generator)
    for kernel in ("gaussian", "laplacian"):
        got = kops.kmv(x, z, v, kernel, bw, precision=precision, backend="cpu")
        want = kops.kmv(x, z, v, kernel, bw, precision=precision, backend="torch")
        assert_kmv_close(got, x, z, v, kernel, bw, precision=precision)
        # same rounded operands: the two differ by accumulation order only, far below the
        # rounding error itself
        err_vs_ref = kmv_error(got, x, z, v, kernel, bw)
        assert err_vs_ref > 1e-5
        diff = ((got.double() - want.double()).abs() / (reference_kernel_matrix(x, z, kernel, bw) @ v.double().abs())).max()
        assert diff < 1e-3 * err_vs_ref + 10 * tolerance(dtype)
    g = torch.randn(97, 4, generator=generator, dtype=dtype)
    got = torch.ops.kops.kmv_grad_xz(x, z, v, g, "gaussian", bw, precision, "cpu")
    want = torch.ops.kops.kmv_grad_xz(x, z, v, g, "gaussian", bw, precision, "torch")
    for a, b in zip(got, want):
        assert ((a - b).norm() / b.norm()) < 1e-4


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n,m,d", [(1, 1, 1), (97, 300, 3), (50, 257, 59), (7, 20, 784)])
def test_kernel_matrix(n, m, d, dtype, generator):
    x, z, _, bw = random_problem(n, m, d, 1, dtype=dtype, generator=generator)
    for kernel in KERNELS:
        k = kops.kernel_matrix(x, z, kernel, bw, backend="cpu")
        assert k.shape == (n, m) and k.dtype == dtype
        ref = reference_kernel_matrix(x, z, kernel, bw)
        assert ((k.double() - ref).abs().max()) <= 10 * tolerance(dtype)
    k = kops.kernel_matrix(x, x, "laplacian", bw, backend="cpu")
    assert (k.diagonal() == 1).all()
    kt = kops.kernel_matrix(x, z, "gaussian", bw, precision="bf16", backend="cpu")
    torch.testing.assert_close(kt, kops.kernel_matrix(x, z, "gaussian", bw, precision="bf16", backend="torch"),
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("n,m,d,c", [(1, 97, 5, 1), (97, 1025, 59, 3), (1025, 130, 784, 2), (13, 70, 2048, 1)])
def test_bf16_mode_in_hardware_matches_its_emulation(n, m, d, c, monkeypatch, generator):
    # AVX512-BF16 products (bf16 operands, float32 sums) against the emulation (rounded
    # operands, float32 FMAs): the same rounded numbers, summed in another order
    monkeypatch.delenv("KOPS_CPU_ISA", raising=False)
    if torch.ops.kops._cpu_bf16_path() != "avx512_bf16":
        pytest.skip("no AVX512-BF16 kernels on this CPU / build")
    x, z, v, bw = random_problem(n, m, d, c, generator=generator)
    reach = float((x.double() / bw).norm(dim=1).max() * (z.double() / bw).norm(dim=1).max())
    bound = max(1e-4, 4 * d * torch.finfo(torch.float32).eps * reach)
    for kernel in KERNELS:
        hardware = kops.kmv(x, z, v, kernel, bw, precision="bf16", backend="cpu")
        monkeypatch.setenv("KOPS_CPU_BF16", "emulate")
        assert torch.ops.kops._cpu_bf16_path() == "emulated"
        emulated = kops.kmv(x, z, v, kernel, bw, precision="bf16", backend="cpu")
        monkeypatch.delenv("KOPS_CPU_BF16")
        assert_kmv_close(hardware, x, z, v, kernel, bw, precision="bf16")
        scale = reference_kernel_matrix(x, z, kernel, bw) @ v.double().abs()
        diff = ((hardware.double() - emulated.double()).abs() / scale).max()
        # the same rounded operands summed in another order: the float32 distances over d
        # terms differ by up to ~d eps |x_s| |z_s| (scaled rows), and so do the kernel values
        # relative to themselves (at most 1.2 d eps |x_s| |z_s| over 12 draws of each case);
        # accuracy itself is assert_kmv_close's check above
        assert diff < bound, f"{kernel}: hardware vs emulated bf16 differ by {diff:.2e} (bound {bound:.2e})"
    # x is z: the diagonal stays exact
    k = kops.kmv(x, x, torch.eye(n)[:, :1].contiguous(), "gaussian", bw, precision="bf16", backend="cpu")
    assert k[0, 0] == 1.0
