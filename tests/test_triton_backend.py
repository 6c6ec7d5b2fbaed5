"""The Triton backend: interpreter correctness on CPU, GPU compile check, GPU correctness.

On a machine without CUDA, tests/conftest.py sets TRITON_INTERPRET=1 before kops is imported,
so the kernels run in the Triton interpreter on CPU tensors. The interpreter costs a few ms per
program x tile step, so sizes here are small but never multiples of the block sizes (64 rows,
16-64 features, 16-128 columns): every mask is exercised.
"""
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import kops
from kops.backends.base import Case
from kops.dispatch import backends, select_backend
from kops.testing import assert_kmv_close, reference_kernel_matrix, reference_kmv_grads, random_problem, tolerance

triton = pytest.importorskip("triton")
BACKEND = backends()["triton"]
KERNELS = list(kops.KERNELS)  # the kernel table: a new kernel is tested everywhere
PRECISIONS = ["ieee", "tf32", "bf16"]


def _runs_here(device="cpu"):
    reason = BACKEND.unsupported_reason(Case("kmv", torch.device(device), torch.float32, 1, 1, 1, 1, "gaussian",
                                             "ieee"))
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture(autouse=True)
def _interpreter_or_gpu(request, monkeypatch):
    if "gpu" in request.keywords:
        # One heuristic configuration per variant: autotuning every distinct shape of this
        # file would cost minutes of compilation on the GPU machine.
        monkeypatch.setenv("KOPS_TRITON_AUTOTUNE", "0")
    elif "compile" not in request.node.name and "import" not in request.node.name:
        _runs_here("cpu")


# ----------------------------------------------------------------------- interpreter
# What every backend must do (half inputs, strides, 1-D v, the exact diagonal, the accumulate
# form, NaN policy, aliasing, ...) is tests/test_contract.py; here: the Triton-specific paths.
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("n,m,d,c", [(67, 93, 20, 3), (70, 45, 70, 17), (33, 70, 5, 1)])
def test_kmv_float32(kernel, precision, n, m, d, c, generator):
    # d = 20: X tile resident; d = 70: d in two chunks; d = 5: direct differences.
    x, z, v, bw = random_problem(n, m, d, c, generator=generator, offset=3.0)
    out = kops.kmv(x, z, v, kernel, bw, precision=precision, backend="triton")
    assert out.dtype == torch.float32 and out.shape == (n, c)
    assert_kmv_close(out, x, z, v, kernel, bw, precision=precision)


@pytest.mark.parametrize("kernel", ["gaussian", "laplacian"])
@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("d", [3, 40])
def test_kmv_float64(kernel, precision, d, generator):
    x, z, v, bw = random_problem(70, 66, d, 2, dtype=torch.float64, generator=generator)
    out = kops.kmv(x, z, v, kernel, bw, precision=precision, backend="triton")
    assert out.dtype == torch.float64
    assert_kmv_close(out, x, z, v, kernel, bw, precision=precision)


def test_wide_v_runs_several_column_tiles(generator):
    x, z, v, bw = random_problem(40, 50, 18, 150, generator=generator)  # BLOCK_C = 128: two tiles
    out = kops.kmv(x, z, v, "laplacian", bw, backend="triton")
    assert_kmv_close(out, x, z, v, "laplacian", bw)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("precision", ["ieee", "bf16"])
def test_kernel_matrix(kernel, precision, generator):
    x, z, _, bw = random_problem(70, 81, 21, None, generator=generator)
    k = kops.kernel_matrix(x, z, kernel, bw, precision=precision, backend="triton")
    ref = reference_kernel_matrix(x, z, kernel, bw)
    tol = 1e-5 + (0 if precision == "ieee" else 2e-2)
    assert (k.double() - ref).abs().max() <= tol


@pytest.mark.parametrize("same", [False, True])
def test_z_range_split(same, monkeypatch, generator):
    # Few rows of x: on a GPU the z range is split over programs; force it in the interpreter.
    from kops.backends import triton_backend

    monkeypatch.setattr(triton_backend, "FORCE_SPLITS", 3)
    x, z, v, bw = random_problem(20, 300, 24, 3, generator=generator)  # 3 ranges of 128, 128, 44
    x = z if same else x
    out = torch.ones(x.shape[0], 3)
    kops.kmv_accumulate(out, x, z, v, "gaussian", bw, alpha=2.0, backend="triton")
    assert_kmv_close((out - 1) / 2, x, z, v, "gaussian", bw)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("n,m,d,c", [(67, 45, 19, 3), (40, 70, 6, 18)])
def test_gradients(kernel, n, m, d, c, generator):
    x, z, v, bw = random_problem(n, m, d, c, generator=generator)
    g = torch.randn(n, c, generator=generator)
    x, z, v = (t.clone().requires_grad_(True) for t in (x, z, v))
    kops.kmv(x, z, v, kernel, bw, backend="triton").backward(g)
    ref = reference_kmv_grads(x, z, v, g, kernel, bw)
    for got, want in zip((x.grad, z.grad, v.grad), ref):
        assert ((got.double() - want).norm() / want.norm()) < 1e-5


@pytest.mark.parametrize("precision", ["tf32", "bf16"])
def test_gradients_reduced_precision(precision, generator):
    x, z, v, bw = random_problem(50, 66, 33, 2, generator=generator)
    g = torch.randn(50, 2, generator=generator)
    gx, gz = torch.ops.kops.kmv_grad_xz(x, z, v, g, "gaussian", bw, precision, "triton")
    ref = reference_kmv_grads(x, z, v, g, "gaussian", bw)
    for got, want in zip((gx, gz), ref):
        assert ((got.double() - want).norm() / want.norm()) < 5 * tolerance(torch.float32, precision)


def test_gradients_float64_and_coincident_points(generator):
    # x is z: the Laplacian's derivative at distance 0 must be 0, not NaN.
    x, _, v, bw = random_problem(45, 45, 20, 2, dtype=torch.float64, generator=generator)
    g = torch.randn(45, 2, generator=generator, dtype=torch.float64)
    gx, gz = torch.ops.kops.kmv_grad_xz(x, x, v, g, "laplacian", bw, "ieee", "triton")
    ref = reference_kmv_grads(x, x, v, g, "laplacian", bw)
    assert torch.isfinite(gx).all() and torch.isfinite(gz).all()
    for got, want in zip((gx, gz), ref):
        assert ((got - want).norm() / want.norm()) < 1e-10


def test_auto_never_picks_the_interpreter():
    case = Case("kmv", torch.device("cpu"), torch.float32, 100, 100, 64, 1, "gaussian", "ieee")
    assert not BACKEND.preferred(case)
    assert select_backend("auto", case).name != "triton"


def test_import_without_triton_and_without_interpreter():
    # kops imports without triton and says why the backend cannot run; with triton but
    # without TRITON_INTERPRET, CPU tensors are refused with the reason. One subprocess (an
    # import of torch costs seconds): triton hidden first, then made visible again.
    script = textwrap.dedent("""
        import sys, torch
        sys.modules["triton"] = None  # import triton now raises ImportError
        import kops
        from kops.backends import triton_backend
        from kops.backends.base import Case
        from kops.dispatch import backends
        b = backends()["triton"]
        case = Case("kmv", torch.device("cpu"), torch.float32, 5, 5, 3, 1, "gaussian", "ieee")
        x = torch.randn(5, 3)
        assert kops.kmv(x, x, torch.ones(5), "gaussian", 1.0).shape == (5,)  # auto still works
        print(b.unavailable_reason())
        del sys.modules["triton"]
        triton_backend._kernels = triton_backend._import_error = None
        print(b.unavailable_reason(), "|", b.unsupported_reason(case))
    """)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    hidden, plain = run.stdout.strip().splitlines()[-2:]
    assert "triton cannot be imported" in hidden
    assert plain.startswith("None |") and "TRITON_INTERPRET" in plain


# ---------------------------------------------------------------------- compile check
_COMPILE_SCRIPT = textwrap.dedent("""
    import sys, triton
    from triton.compiler import ASTSource
    from triton.backends.compiler import GPUTarget
    from kops.backends import triton_kernels as tk
    arch = int(sys.argv[1])
    failed = []
    for fn, sig, consts, label in tk.compile_variants():
        try:
            triton.compile(ASTSource(fn, sig, consts), target=GPUTarget("cuda", arch, 32))
        except Exception as exc:
            failed.append(f"{label}: {type(exc).__name__}: {str(exc)[:800]}")
    print("\\n".join(failed))
    sys.exit(1 if failed else 0)
""")


@pytest.mark.slow
def test_compile_every_variant_for_sm80_and_sm90(tmp_path):
    """Compile every kernel variant to a cubin for sm_80 and sm_90 without a GPU.

    The interpreter accepts programs that the GPU compiler rejects (tl.dot shapes, dtype
    mixes), so each variant is compiled for real. The jit functions must not be interpreter
    objects: the check runs in a subprocess with TRITON_INTERPRET unset (two, one per arch,
    in parallel).
    """
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    procs = []
    for arch in (80, 90):
        env_arch = dict(env, TRITON_CACHE_DIR=str(tmp_path / f"cache{arch}"))
        procs.append((arch, subprocess.Popen([sys.executable, "-c", _COMPILE_SCRIPT, str(arch)], env=env_arch,
                                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)))
    for arch, proc in procs:
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, f"sm_{arch} compile failures:\n{out[-4000:]}"


# ------------------------------------------------------------------------ real GPU
@pytest.mark.gpu
@pytest.mark.parametrize("kernel,precision,n,m,d,c", [
    ("gaussian", "ieee", 4097, 3001, 784, 17), ("gaussian", "tf32", 4097, 3001, 784, 17),
    ("gaussian", "bf16", 4097, 3001, 784, 17), ("laplacian", "bf16", 3001, 2049, 64, 129),
    ("laplacian", "tf32", 3001, 2049, 64, 129), ("matern32", "ieee", 2049, 1025, 3, 1024),
    ("matern52", "bf16", 1025, 4097, 16, 1), ("laplacian", "ieee", 200, 70001, 40, 3),  # z-range split
])
def test_kmv_gpu(kernel, precision, n, m, d, c, generator):
    x, z, v, bw = random_problem(n, m, d, c, device="cuda", generator=generator, offset=2.0)
    out = kops.kmv(x, z, v, kernel, bw, precision=precision, backend="triton")
    rows = slice(0, min(n, 200))
    assert_kmv_close(out[rows].cpu(), x[rows].cpu(), z.cpu(), v.cpu(), kernel, bw, precision=precision)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_kmv_gpu_dtypes(dtype, generator):
    x, z, v, bw = random_problem(2049, 1537, 100, 5, dtype=dtype, device="cuda", generator=generator)
    out = kops.kmv(x, z, v, "laplacian", bw, backend="triton")
    assert_kmv_close(out[:200].cpu(), x[:200].cpu(), z.cpu(), v.cpu(), "laplacian", bw)


@pytest.mark.gpu
@pytest.mark.parametrize("kernel", ["gaussian", "laplacian"])
@pytest.mark.parametrize("d", [7, 200])
def test_gradients_gpu(kernel, d, generator):
    x, z, v, bw = random_problem(1500, 1100, d, 20, device="cuda", generator=generator)
    g = torch.randn(1500, 20, device="cuda")
    x, z, v = (t.clone().requires_grad_(True) for t in (x, z, v))
    kops.kmv(x, z, v, kernel, bw, backend="triton").backward(g)
    ref = reference_kmv_grads(x.cpu(), z.cpu(), v.cpu(), g.cpu(), kernel, bw)
    for got, want in zip((x.grad, z.grad, v.grad), ref):
        assert ((got.double().cpu() - want).norm() / want.norm()) < 1e-4


@pytest.mark.gpu
def test_gpu_int64_offsets(generator):
    # n * d > 2^31 for x (600000 x 4000 floats = 9.6 GB): 32-bit row offsets would wrap.
    n, d = 600_000, 4000
    x = torch.randn(n, d, device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    z = x[-300:].clone()
    v = torch.randn(300, 2, device="cuda")
    bw = float(d) ** 0.5
    out = kops.kmv(x, z, v, "gaussian", bw, backend="triton")
    rows = torch.arange(n - 64, n, device="cuda")
    assert_kmv_close(out[rows].cpu(), x[rows].cpu(), z.cpu(), v.cpu(), "gaussian", bw)
