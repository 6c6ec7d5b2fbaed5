"""kops.distributed: sharded EigenPro fits on 1, 2 and 3 CPU processes (Gloo) against the
single-process fits with the same seed, the fault behaviour, and the pieces.

Each world size is launched once (fresh processes, file-based rendezvous, a timeout on every
collective and on the whole run) and runs every case of ``distributed_scenarios.CASES``;
the tests compare what came back.
"""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist

import distributed_scenarios as scenarios
import kops
import kops.distributed as kd
from kops.distributed.group import Shard, all_gather_rows, batch_part

pytestmark = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="torch.distributed with Gloo is not available")

_RUNS, _SINGLE = {}, {}
#: relative tolerance against the single-process fit: float64 cases and the float32 one. The
#: Laplacian kernel turns the rounding of a squared distance near 0 (1e-16) into 1e-8 (its
#: square root), so a different summation order moves the float64 fits by about 1e-9.
RTOL = {"float64": 1e-7, "float32": 1e-4}


def runs(world_size):
    """Every case fitted on ``world_size`` processes (once per world size)."""
    if world_size not in _RUNS:
        _RUNS[world_size] = kd.launch(scenarios.run_cases, world_size, (list(scenarios.CASES),), timeout=600,
                                      collective_timeout=120)
    return _RUNS[world_size]


def single(name):
    if name not in _SINGLE:
        _SINGLE[name] = scenarios.fit_case(name, distributed=False)
    return _SINGLE[name]


def _rel(a, b):
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / np.abs(np.asarray(b)).max())


@pytest.mark.parametrize("world_size", [1, 2, 3])
@pytest.mark.parametrize("name", list(scenarios.CASES))
def test_sharded_fit_matches_single_process(name, world_size):
    results = runs(world_size)
    model, raw = single(name)
    tol = RTOL[scenarios.CASES[name][1][3]]
    first = results[0][name]
    for rank, result in enumerate(results):
        out = result[name]
        # every rank gets the same (all-reduced) predictions, and they are the single-process fit's
        np.testing.assert_array_equal(out["raw"], first["raw"], err_msg=f"rank {rank} differs from rank 0")
        assert _rel(out["raw"], raw) < tol
        assert _rel(out["weights"], model.weights_.numpy()) < 100 * tol
        np.testing.assert_allclose(out["objective"], [r["objective"] for r in model.history_], rtol=100 * tol)
        np.testing.assert_allclose(out["pred_gathered"], raw, rtol=0, atol=tol * np.abs(raw).max())
    assert first["full_gradient"] == bool(getattr(model, "full_gradient_", False))
    if first["full_gradient"]:  # the full-gradient path took the same route (formed tiles or fused)
        assert first["block_reuse"] == model.block_reuse_
    rows = [result[name]["rows"] for result in results]
    assert sum(rows) == model.weights_.shape[0] and max(rows) - min(rows) <= 1  # sharded, balanced


@pytest.mark.parametrize("world_size", [1, 2, 3])
@pytest.mark.parametrize("name", scenarios.WARM_START_CASES)
def test_sharded_warm_start_continues_like_the_single_process_fit(name, world_size):
    first, second = scenarios.warm_start_fit(name, distributed=False)
    assert _rel(second, first) > 1e-3  # the second epoch moved the model: the test can tell
    for rank, result in enumerate(runs(world_size)):
        sharded_first, sharded_second = result["warm_start"][name]
        assert _rel(sharded_first, first) < 1e-7, f"rank {rank}"
        assert _rel(sharded_second, second) < 1e-7, f"rank {rank}: the warm start was not continued"


@pytest.fixture(scope="module")
def resumed(tmp_path_factory):
    """Checkpointed fits resumed on 2 processes (``distributed_scenarios.resume_cases``)."""
    import shutil

    folder = tmp_path_factory.mktemp("resume")
    for name in scenarios.RESUME_CASES:  # single-process checkpoints after 1 epoch
        scenarios.fit_case(name, distributed=False, epochs=1, checkpoint=folder / f"{name}-single")
        shutil.copytree(folder / f"{name}-single", folder / f"{name}-single-2p")
    results = kd.launch(scenarios.resume_cases, 2, (str(folder),), timeout=600, collective_timeout=120)
    return folder, results


@pytest.mark.parametrize("name", scenarios.RESUME_CASES)
def test_sharded_fit_resumes_from_checkpoints(name, resumed):
    """Fit 1 epoch with checkpoints, resume for the rest: the uninterrupted fit's model, sharded
    (2 processes from their own checkpoint, and from a single process's) and on one process
    from the 2 processes' checkpoint (the state is saved gathered)."""
    folder, results = resumed
    tol = RTOL[scenarios.CASES[name][1][3]]
    uninterrupted = runs(2)[0][name]["raw"]
    _, raw = single(name)
    for rank, result in enumerate(results):
        out = result[name]
        assert out["resumed_at"] == 2 and out["from_single_at"] == 2  # after epoch 1
        np.testing.assert_array_equal(out["resumed"], uninterrupted, err_msg=f"rank {rank}")
        assert _rel(out["from_single"], raw) < tol
    model, from_sharded = scenarios.fit_case(name, distributed=False, checkpoint=folder / f"{name}-2p-epoch1",
                                             resume=True)
    assert model.resumed_from_.epoch == 2
    assert _rel(from_sharded, raw) < tol


@pytest.mark.parametrize("world_size", [1, 2, 3])
@pytest.mark.parametrize("name", scenarios.SHARDED_DATA_CASES)
def test_sharded_data_fit_matches_single_process_fit_on_all_the_data(name, world_size):
    """Each rank passes only its unequal part (240 rows: 100/140, 60/80/100): the fit is the
    single-process fit on all the rows."""
    model, raw = single(name)
    tol = RTOL[scenarios.CASES[name][1][3]]
    results = runs(world_size)
    first = results[0]["sharded_data"][name]
    for rank, result in enumerate(results):
        out = result["sharded_data"][name]
        np.testing.assert_array_equal(out["raw"], first["raw"], err_msg=f"rank {rank} differs from rank 0")
        assert _rel(out["raw"], raw) < tol, f"rank {rank}"
        assert _rel(out["weights"], model.weights_.numpy()) < 100 * tol
        np.testing.assert_allclose(out["objective"], [r["objective"] for r in model.history_], rtol=100 * tol)
    assert first["full_gradient"] == bool(getattr(model, "full_gradient_", False))


@pytest.mark.parametrize("name", ["ep3_span", "ep4_sample_ridge"])
def test_sharded_data_is_not_a_fit_on_one_part(name):
    """The fit on the parts is far from a fit on rank 0's part alone (what silently replicated
    local data would give), so the test above can tell."""
    cls_name, data, params = scenarios.CASES[name]
    X, y, X_test = scenarios.make_data(*data)
    X0, y0 = scenarios.rank_part(X, y, 0, 2)
    part_only = getattr(kops, cls_name)(dtype=data[3], device="cpu", random_state=3, **params).fit(X0, y0)
    sharded = runs(2)[0]["sharded_data"][name]["raw"]
    assert _rel(sharded, np.asarray(part_only.decision_function(X_test))) > 1e-2


def test_sharded_data_with_other_features_or_outputs_fails_on_every_rank():
    for result in runs(2), runs(3):
        for rank, r in enumerate(result):
            features, outputs = r["sharded_mismatch"]["features"], r["sharded_mismatch"]["outputs"]
            assert features.startswith("X") and "same number of columns" in features, (rank, features)
            assert "2 columns" in features and "3 columns" in features, features
            assert outputs.startswith("y") and "same number of columns" in outputs, (rank, outputs)


def test_sharded_data_refuses_what_it_does_not_support(tmp_path):
    from kops.solvers.checkpoint import checkpointing

    X, y, _ = scenarios.make_data(40, 3, 1, "float64")
    model = kd.EigenPro4(centers=10, epochs=1, data_sharding="rows")
    with pytest.raises(NotImplementedError, match="sample_weight"):
        model.fit(X, y, sample_weight=np.ones(40))
    with pytest.raises(ValueError, match="data_sharding must be one of"):
        kd.EigenPro4(centers=10, data_sharding="columns").fit(X, y)
    with pytest.raises(NotImplementedError, match="checkpoints are not supported with data_sharding='rows'"):
        with checkpointing(model, tmp_path / "ckpt", every=1):
            model.fit(X, y)


def test_ranks_with_different_data_fail_with_a_clear_error():
    messages = [r["mismatch"] for r in runs(2)]
    assert all("same on every rank" in m and "1 of 2 ranks" in m for m in messages), messages


def test_a_dead_rank_makes_the_others_fail_not_hang():
    with pytest.raises(kd.LaunchError) as info:
        kd.launch(scenarios.die_mid_fit, 2, (1,), timeout=300, collective_timeout=20)
    errors = info.value.errors
    assert "exited with code 3" in errors[1]
    assert "DistributedError" in errors[0] and "failed on rank 0 of 2" in errors[0], errors[0]


def test_torchrun_environment(tmp_path):
    """``torchrun --standalone`` (a free port): the default group comes from its environment."""
    script = tmp_path / "fit.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        import numpy as np, torch, torch.distributed as dist
        import distributed_scenarios as scenarios
        torch.set_num_threads(1)
        model, raw = scenarios.fit_case("ep4_span", distributed=True)
        if dist.get_rank() == 0:
            np.save({str(tmp_path / "raw.npy")!r}, raw)
        import kops.distributed as kd
        assert kd.launched_by_torchrun()
        print(dist.get_backend(), dist.get_world_size(), flush=True)
        # leave as kops fit does under torchrun: Gloo's threads occasionally abort the
        # interpreter's exit ("terminate called without an active exception", -6) after a
        # finished fit
        import os
        dist.barrier()
        os._exit(0)
    """))
    env = dict(os.environ, KOPS_DIST_TIMEOUT="60", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           str(script)], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "gloo 2" in proc.stdout
    _, raw = single("ep4_span")
    assert _rel(np.load(tmp_path / "raw.npy"), raw) < RTOL["float64"]


# ------------------------------------------------------------------ pieces, one process
def test_shard_partitions_rows():
    for p in (3, 7, 10, 11):
        for world in (1, 2, 3):
            shards = [Shard(p, r, world) for r in range(world)]
            assert [s.lo for s in shards] == [0] + [s.hi for s in shards[:-1]] and shards[-1].hi == p
            assert max(s.rows for s in shards) - min(s.rows for s in shards) <= 1
            parts = [batch_part(p, r, world) for r in range(world)]
            assert sum(part.stop - part.start for part in parts) == p and parts[-1].stop == p
    mask, local = Shard(10, 1, 3).local(torch.tensor([0, 4, 5, 7, 9]))
    assert mask.tolist() == [False, True, True, False, False] and local.tolist() == [0, 1]
    with pytest.raises(ValueError, match="centers = 2 is smaller than the number of processes"):
        Shard(2, 0, 3, "centers")


def test_default_group_needs_torchrun_environment(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    if dist.is_initialized():
        pytest.skip("a default group is initialised in this process")
    X, y, _ = scenarios.make_data(50, 3, 1, "float64")
    assert not kd.launched_by_torchrun()
    with pytest.raises(ValueError, match="torchrun"):
        kd.EigenPro4(centers=10).fit(X, y)
    with pytest.raises(ValueError, match="process_group must be"):
        kd.EigenPro2(process_group="world").fit(X, y)
    monkeypatch.setenv("KOPS_DIST_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="KOPS_DIST_TIMEOUT"):
        kd.group.timeout_from_env()


def test_parameters_and_classes():
    model = kd.EigenPro4("gaussian", 2.0, centers=30, epochs=3, process_group=None)
    params = model.get_params()
    assert params["process_group"] is None and params["centers"] == 30 and params["kernel"] == "gaussian"
    assert set(params) == set(kops.EigenPro4().get_params()) | {"process_group", "data_sharding"}
    assert params["data_sharding"] == "replicated"
    assert isinstance(model, kops.EigenPro4)
    assert kd.sharded_estimator(kops.EigenPro3) is kd.EigenPro3
    assert kd.sharded_estimator("EigenPro2") is kd.EigenPro2
    with pytest.raises(ValueError, match="no sharded version"):
        kd.sharded_estimator(kops.ExactKernelRidge)
    sklearn = pytest.importorskip("sklearn.base")
    assert sklearn.clone(model).get_params() == params


def test_all_gather_rows_world_of_one(tmp_path):
    """The collectives on a group of one (this process), for the gather's padding."""
    if dist.is_initialized():
        pytest.skip("a default group is initialised in this process")
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        group = dist.group.WORLD
        t = torch.arange(12.0).reshape(6, 2)
        np.testing.assert_array_equal(all_gather_rows(t, Shard(6, 0, 1), group), t)
        x = torch.randn(5, 2, dtype=torch.float64)
        z = torch.randn(4, 2, dtype=torch.float64)
        a = torch.randn(4, 3, dtype=torch.float64)
        product = kd.ShardedKernelProduct(z, kops.Laplacian(2.0), Shard(4, 0, 1), group)
        ref = torch.exp(-torch.cdist(x, z) / 2.0) @ a
        torch.testing.assert_close(product(x, a), ref)
        g = torch.randn(5, 3, dtype=torch.float64)
        torch.testing.assert_close(product.transpose(x, g), torch.exp(-torch.cdist(z, x) / 2.0) @ g)
    finally:
        dist.destroy_process_group()


def test_sample_weights_and_sharded_rows_on_a_world_of_one(tmp_path):
    """Unequal sample weights are refused (equal ones rescale the ridge); ShardedRows on one
    rank returns the rows asked, in their order."""
    from kops.distributed.data import ShardedRows, take_rows

    if dist.is_initialized():
        pytest.skip("a default group is initialised in this process")
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        X, y, _ = scenarios.make_data(60, 3, 1, "float64")
        weights = np.ones(60)
        weights[0] = 5.0
        for cls in (kd.EigenPro2, kd.EigenPro3, kd.EigenPro4):
            kwargs = {} if cls is kd.EigenPro2 else {"centers": 20}
            with pytest.raises(ValueError, match="sample_weight: .* takes no sample weights"):
                cls(epochs=1, dtype="float64", device="cpu", **kwargs).fit(X, y, sample_weight=weights)
        t = torch.arange(12.0).reshape(6, 2)
        rows = ShardedRows(t, dist.group.WORLD, "X")
        assert rows.shape == (6, 2) and rows.shard.sizes == [6]
        idx = torch.tensor([4, 0, 5, 0])
        np.testing.assert_array_equal(rows[idx], t[idx])
        np.testing.assert_array_equal(rows[1:4], t[1:4])
        u = torch.arange(6.0)[:, None] * 10
        xb, ub = take_rows(idx, rows, ShardedRows(u, dist.group.WORLD, "y", sizes=[6]))
        np.testing.assert_array_equal(ub, u[idx])
        with pytest.raises(TypeError, match="long tensor"):
            rows[[1, 2]]
    finally:
        dist.destroy_process_group()


# ------------------------------------------------------------------ the command line under torchrun
def _kops(tmp_path, *argv, nproc=None):
    """``python -m kops ...``, or ``torchrun --standalone --nproc-per-node N -m kops ...``."""
    env = dict(os.environ, KOPS_DIST_TIMEOUT="60", OMP_NUM_THREADS="1")
    launcher = [sys.executable] if nproc is None else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                      "--nproc-per-node", str(nproc)]
    return subprocess.run(launcher + ["-m", "kops", *argv], capture_output=True, text=True, timeout=600, env=env,
                          cwd=tmp_path)


FIT = ["fit", "sklearn:digits", "--centers", "200", "--bandwidth", "10", "--dtype", "float64", "--seed", "0",
       "--batch-size", "128"]


def test_torchrun_kops_fit_and_resume_match_the_single_process_command(tmp_path):
    """``torchrun -m kops fit``: one epoch with checkpoints, then resumed for the second; its model
    file is the 2-epoch single-process ``kops fit`` model (float64, to a summation order's rounding),
    and only rank 0 printed."""
    first = _kops(tmp_path, *FIT, "--epochs", "1", "--checkpoint", "ck", "--checkpoint-every", "1", "--json",
                  "--out", "unused.safetensors", nproc=2)
    assert first.returncode == 0, first.stdout + first.stderr
    records = [json.loads(line) for line in first.stdout.splitlines() if line.startswith("{")]
    assert [r["event"] for r in records] == ["epoch", "summary"], first.stdout  # rank 0 alone
    resumed = _kops(tmp_path, *FIT, "--epochs", "2", "--checkpoint", "ck", "--resume", "--out", "two.safetensors",
                    nproc=2)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert resumed.stdout.count("resumed from ck at epoch 2") == 1, resumed.stdout
    assert resumed.stdout.count("model saved to two.safetensors") == 1
    single = _kops(tmp_path, *FIT, "--epochs", "2", "--out", "one.safetensors")
    assert single.returncode == 0, single.stdout + single.stderr
    from sklearn.datasets import load_digits

    X = load_digits().data
    one, two = kops.load(tmp_path / "one.safetensors"), kops.load(tmp_path / "two.safetensors")
    assert type(two) is kops.EigenPro4 and two.centers_.shape == one.centers_.shape
    assert _rel(two.decision_function(X), one.decision_function(X)) < RTOL["float64"]
    np.testing.assert_array_equal(two.predict(X), one.predict(X))


def test_torchrun_kops_fit_refuses_what_it_cannot_shard(tmp_path):
    proc = _kops(tmp_path, *FIT, "--solver", "exact", nproc=2)
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.startswith("kops fit")]
    assert lines == ["kops fit: error: argument --solver: --solver exact has no sharded version under torchrun; "
                     "run it in one process (python -m kops fit ...), or pick one of eigenpro4, eigenpro3, "
                     "eigenpro2"], proc.stderr
    # torchrun's agent prints its own traceback (ChildFailedError); none comes from kops's processes
    assert not [line for line in proc.stderr.splitlines() if line.lstrip().startswith("File") and "/kops/" in line]
