"""Checkpoint and resume of the iterative solvers (kops.solvers.checkpoint).

The resumed fit must end with exactly the weights of an uninterrupted fit with the same seed
(CPU, float32): interrupted in-process after a number of checkpoint writes, and a real
``kops fit`` process killed with SIGKILL mid-epoch.
"""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import kops
from kops.solvers.checkpoint import (STATE_FILE, CheckpointError, checkpointing, read_checkpoint_header)


class Interrupt(Exception):
    pass


def _data(seed=0, n=240, d=6):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(np.float32)
    y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0.3)
    return X, y


def _interrupted_fit(make, X, y, directory, every, writes, **fit_params):
    """Fit with checkpoints and stop the process's fit after ``writes`` state files."""
    model = make()
    with checkpointing(model, directory, every=every) as ckpt:
        save = ckpt.save

        def save_then_stop(*args, **kwargs):
            path = save(*args, **kwargs)
            if ckpt.writes == writes:
                raise Interrupt
            return path

        ckpt.save = save_then_stop
        with pytest.raises(Interrupt):
            model.fit(X, y, **fit_params)
    return read_checkpoint_header(directory)


CASES = {
    # sample preconditioner (budget too small for the span factor): T > 1, pending batches
    "eigenpro4-delayed": lambda: kops.EigenPro4("gaussian", 3.0, centers=200, epochs=3, batch_size=16,
                                                random_state=1, memory_budget="600KB", ridge=0.5,
                                                full_gradient=False),
    "eigenpro4-span": lambda: kops.EigenPro4("laplacian", 3.0, centers=60, epochs=3, batch_size=16, random_state=2),
    "eigenpro3": lambda: kops.EigenPro3("gaussian", 3.0, centers=60, epochs=3, batch_size=16, random_state=3),
    "eigenpro2": lambda: kops.EigenPro2("laplacian", 3.0, epochs=3, batch_size=16, random_state=4, ridge=0.1),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_resumed_fit_equals_uninterrupted_fit_bitwise(case, tmp_path):
    X, y = _data()
    make = CASES[case]
    reference = make().fit(X, y)
    header = _interrupted_fit(make, X, y, tmp_path, every=4, writes=5)  # batch 20 of 15 per epoch
    assert header["position"]["epoch"] == 2 and header["position"]["batch"] == 5
    if case == "eigenpro4-delayed":
        assert reference.projection_interval_ > 1 and header["state"]["pending"] > 0
    resumed = make()
    with checkpointing(resumed, tmp_path, every=4, resume=True) as ckpt:
        resumed.fit(X, y)
    assert (ckpt.resumed_from.epoch, ckpt.resumed_from.batch) == (2, 5)
    assert torch.equal(resumed.weights_, reference.weights_)
    assert [r["objective"] for r in resumed.history_] == [r["objective"] for r in reference.history_]
    assert read_checkpoint_header(tmp_path)["complete"]


@pytest.mark.parametrize("cls", [kops.EigenPro3, kops.EigenPro4])
def test_full_gradient_fit_resumes_at_the_epoch_boundary_bitwise(cls, tmp_path):
    X, _ = _data()
    y = np.sin(X[:, 0])

    def make():
        return cls("gaussian", 3.0, centers=60, epochs=5, random_state=3, ridge=1e4, full_gradient=True)

    reference = make().fit(X, y)
    assert reference.full_gradient_
    header = _interrupted_fit(make, X, y, tmp_path, every=1, writes=2)  # checkpoints after epochs 1, 2
    assert header["position"] == {"epoch": 3, "batch": 0, "best": header["position"]["best"]}
    resumed = make()
    with checkpointing(resumed, tmp_path, resume=True):
        resumed.fit(X, y)
    assert torch.equal(resumed.weights_, reference.weights_)


@pytest.mark.parametrize("case", ["eigenpro4-delayed", "eigenpro2"])
def test_weighted_fit_resumes_bitwise_and_other_weights_are_refused(case, tmp_path):
    X, y = _data()
    w = np.random.default_rng(5).uniform(0.5, 2.0, len(X))
    w[::7] = 0.0  # rows of weight 0 are dropped: EigenPro 2's centers are then not X itself
    make = CASES[case]
    reference = make().fit(X, y, sample_weight=w)
    _interrupted_fit(make, X, y, tmp_path, every=4, writes=3, sample_weight=w)
    other = make()
    with checkpointing(other, tmp_path, resume=True), pytest.raises(CheckpointError, match="another fit: its data"):
        other.fit(X, y, sample_weight=w * 2)  # the weights are part of the data's digest
    with checkpointing(other, tmp_path, resume=True), pytest.raises(CheckpointError, match="another fit: its data"):
        other.fit(X, y)
    resumed = make()
    with checkpointing(resumed, tmp_path, every=4, resume=True):
        resumed.fit(X, y, sample_weight=w)
    assert torch.equal(resumed.weights_, reference.weights_)


def test_resume_of_a_finished_fit_restores_its_model(tmp_path):
    X, y = _data()
    model = CASES["eigenpro3"]()
    with checkpointing(model, tmp_path, every=1000):
        model.fit(X, y)
    again = CASES["eigenpro3"]()
    with checkpointing(again, tmp_path, resume=True):
        again.fit(X, y)
    assert torch.equal(again.weights_, model.weights_)
    assert len(again.history_) == 3


def test_foreign_and_damaged_checkpoints_are_clear_errors(tmp_path):
    X, y = _data()
    _interrupted_fit(CASES["eigenpro3"], X, y, tmp_path, every=3, writes=2)
    other_seed = kops.EigenPro3("gaussian", 3.0, centers=60, epochs=3, batch_size=16, random_state=99)
    with checkpointing(other_seed, tmp_path, resume=True), \
            pytest.raises(CheckpointError, match="another fit: its parameters.*random_state"):
        other_seed.fit(X, y)
    other_data = CASES["eigenpro3"]()
    with checkpointing(other_data, tmp_path, resume=True), pytest.raises(CheckpointError, match="another fit: its data"):
        other_data.fit(X * 2, y)
    other_class = kops.EigenPro4("gaussian", 3.0, centers=60, epochs=3, batch_size=16, random_state=3)
    with checkpointing(other_class, tmp_path, resume=True), pytest.raises(CheckpointError, match="estimator"):
        other_class.fit(X, y)
    fresh = CASES["eigenpro3"]()
    with checkpointing(fresh, tmp_path), pytest.raises(CheckpointError, match="already holds a checkpoint"):
        fresh.fit(X, y)
    state = tmp_path / STATE_FILE
    raw = bytearray(state.read_bytes())
    raw[-5] ^= 0xFF  # a flipped bit in the tensor data
    state.write_bytes(bytes(raw))
    damaged = CASES["eigenpro3"]()
    with checkpointing(damaged, tmp_path, resume=True), pytest.raises(CheckpointError, match="damaged"):
        damaged.fit(X, y)
    state.write_bytes(b"not a checkpoint at all")
    with checkpointing(damaged, tmp_path, resume=True), pytest.raises(CheckpointError, match="not a kops checkpoint"):
        damaged.fit(X, y)


def test_checkpoint_every_seconds_and_argument_checks(tmp_path):
    X, y = _data()
    model = CASES["eigenpro2"]()
    with checkpointing(model, tmp_path, every_seconds=1e-9) as ckpt:
        model.fit(X, y)
    assert ckpt.writes >= 45  # every batch (15 per epoch, 3 epochs) and the end
    with pytest.raises(ValueError, match="every must be a positive"):
        kops.solvers.Checkpointer(tmp_path, every=0)
    with pytest.raises(ValueError, match="every_seconds"):
        kops.solvers.Checkpointer(tmp_path, every_seconds=-1)


def _fit_command(data, model, *extra):
    return [sys.executable, "-m", "kops", "fit", str(data), "--solver", "eigenpro4", "--kernel", "gaussian",
            "--bandwidth", "2", "--centers", "200", "--batch-size", "16", "--epochs", "12", "--seed", "5",
            "--memory-budget", "600KB", "--val-split", "0", "--device", "cpu", "--quiet", "--out", str(model),
            *extra]


def test_sigkilled_fit_process_resumes_to_the_uninterrupted_model(tmp_path):
    X, y = _data(seed=7, n=240)
    data = tmp_path / "train.npz"
    np.savez(data, X=X, y=y)
    env = dict(os.environ, KOPS_CPU_NATIVE="always", OMP_NUM_THREADS="1")
    ckpt = tmp_path / "ckpt"
    killed = subprocess.Popen(_fit_command(data, tmp_path / "killed.safetensors", "--checkpoint", str(ckpt),
                                           "--checkpoint-every", "7"), env=env, stderr=subprocess.PIPE)
    state = ckpt / STATE_FILE
    deadline = time.monotonic() + 120
    seen = 0.0
    writes = 0
    while time.monotonic() < deadline and killed.poll() is None:  # kill at the third checkpoint write
        if state.exists() and state.stat().st_mtime_ns != seen:
            seen, writes = state.stat().st_mtime_ns, writes + 1
            if writes == 3:
                break
        time.sleep(0.002)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert killed.returncode == -signal.SIGKILL, killed.stderr.read().decode()
    header = read_checkpoint_header(ckpt)
    assert not header["complete"] and header["position"]["epoch"] < 12
    resumed = subprocess.run(_fit_command(data, tmp_path / "resumed.safetensors", "--checkpoint", str(ckpt),
                                          "--checkpoint-every", "7", "--resume", "--json"),
                             env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    reference = subprocess.run(_fit_command(data, tmp_path / "reference.safetensors"), env=env,
                               capture_output=True, text=True, timeout=300)
    assert reference.returncode == 0, reference.stderr
    a = kops.load(tmp_path / "resumed.safetensors")
    b = kops.load(tmp_path / "reference.safetensors")
    assert a.projection_interval_ > 1
    assert torch.equal(a.weights_, b.weights_)
    summary = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert summary["event"] == "summary" and summary["epochs"] == 12
    position = header["position"]
    assert summary["resumed_from"] == {"epoch": position["epoch"], "batch": position["batch"]}
