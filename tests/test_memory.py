"""The torch reference backend stays within its memory budget (never forms K)."""
import os
import subprocess
import sys
import textwrap

import pytest

from kops.backends.torch_reference import block_ranges

SCRIPT = textwrap.dedent(
    """
    import resource, torch, kops
    torch.set_num_threads(2)
    n = m = 20000
    g = torch.Generator().manual_seed(0)
    x, z, v = torch.randn(n, 8, generator=g), torch.randn(m, 8, generator=g), torch.randn(m, 1, generator=g)
    kops.kmv(x[:10], z[:10], v[:10], "gaussian", 2.0, backend="torch")  # warm up allocator and threads
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with kops.memory_budget("32MiB"):
        out = kops.kmv(x, z, v, "gaussian", 2.0, backend="torch")
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert torch.isfinite(out).all()
    print((after - before) * 1024)
    """
)


def test_peak_memory_of_reference_backend_stays_within_budget():
    # n = m = 20000 in float32: K would be 1.6 GB. The peak growth of the process while the
    # product runs must stay within the 32 MiB budget (plus 16 MiB of slack), far below n*m*4.
    # A fixed mmap threshold makes glibc return freed blocks at once, so that ru_maxrss
    # measures live memory rather than the allocator's retention policy.
    env = dict(os.environ, OMP_NUM_THREADS="2", MALLOC_MMAP_THRESHOLD_=str(2**20))
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr
    growth = int(result.stdout.strip().splitlines()[-1])
    full_matrix = 20000 * 20000 * 4
    assert growth < 32 * 2**20 + 16 * 2**20, f"peak grew by {growth / 2**20:.0f} MiB"
    assert growth < full_matrix / 16


@pytest.mark.parametrize("n,m,bpp,budget", [(1, 1, 12, 10), (97, 1025, 12, 4000), (1025, 97, 800, 10**6), (20000, 20000, 12, 64 * 2**20)])
def test_blocks_cover_every_pair_once_within_budget(n, m, bpp, budget):
    seen = 0
    rows = set()
    for i0, i1, j0, j1 in block_ranges(n, m, bpp, budget):
        assert 0 <= i0 < i1 <= n and 0 <= j0 < j1 <= m
        assert (i1 - i0) * (j1 - j0) * bpp <= max(budget, bpp)
        seen += (i1 - i0) * (j1 - j0)
        rows.add((i0, i1))
    assert seen == n * m


SOLVER_SCRIPT = textwrap.dedent(
    """
    import resource, sys, numpy as np, torch, kops
    torch.set_num_threads(2)
    name = sys.argv[1]
    rng = np.random.default_rng(0)
    X = rng.normal(size=(4000, 64)).astype(np.float32)
    y = rng.integers(0, 10, size=4000)
    kw = {"EigenPro2": {}, "EigenPro3": {"centers": 1500}, "EigenPro4": {"centers": 1500}}[name]
    cls = getattr(kops, name)
    warm = {k: 100 for k in kw}
    cls("laplacian", 8.0, epochs=1, batch_size=100, random_state=0, **warm).fit(X[:300], y[:300])  # warm up
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    model = cls("laplacian", 8.0, epochs=1, random_state=0, memory_budget="32MiB", **kw).fit(X, y)
    model.predict(X)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print((after - before) * 1024)
    """
)


@pytest.mark.parametrize("name", ["EigenPro2", "EigenPro3", "EigenPro4"])
def test_peak_memory_of_solvers_stays_within_budget(name):
    # Measured before: a 64 MB budget fit grew the process by 200 MB (the Nystrom set-up).
    # Here K(X, X) would be 64 MB and K(Z, Z) in float64 18 MB. The set-up, eigensystem, projection and prediction stay within the 32 MiB budget
    # plus 48 MiB for what the model itself holds (data, buffers, eigenvectors, allocator).
    env = dict(os.environ, OMP_NUM_THREADS="2", MALLOC_MMAP_THRESHOLD_=str(2**20))
    result = subprocess.run([sys.executable, "-c", SOLVER_SCRIPT, name], capture_output=True, text=True, env=env,
                            timeout=600)
    assert result.returncode == 0, result.stderr
    growth = int(result.stdout.strip().splitlines()[-1])
    assert growth < 32 * 2**20 + 48 * 2**20, f"{name}: peak grew by {growth / 2**20:.0f} MiB"
