"""Backend selection, the environment override, info() and the command line."""
import json
import subprocess
import sys

import pytest
import torch

import kops
from kops.backends.base import Case
from kops.dispatch import backends, select_backend


def _case(device="cpu", dtype=torch.float32, d=8):
    return Case("kmv", torch.device(device), dtype, 100, 100, d, 1, "gaussian", "ieee")


def test_auto_on_cpu_never_picks_a_gpu_backend():
    chosen = select_backend("auto", _case())
    assert chosen.name in ("cpu", "torch")


def test_explicit_torch_backend():
    assert select_backend("torch", _case()).name == "torch"


def test_environment_variable_overrides_auto(monkeypatch):
    monkeypatch.setenv("KOPS_BACKEND", "torch")
    assert select_backend("auto", _case()).name == "torch"
    monkeypatch.setenv("KOPS_BACKEND", "nonsense")
    with pytest.raises(ValueError, match="KOPS_BACKEND"):
        select_backend("auto", _case())
    # an explicit per-call backend wins over the environment
    assert select_backend("torch", _case()).name == "torch"


def test_environment_backend_is_used_by_the_ops(monkeypatch):
    calls = []
    torch_backend = backends()["torch"]
    original = torch_backend.kmv

    def spy(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(torch_backend, "kmv", spy)
    monkeypatch.setenv("KOPS_BACKEND", "torch")
    kops.kmv(torch.randn(3, 2), torch.randn(4, 2), torch.randn(4), "gaussian", 1.0)
    assert calls == [1]


def test_info_reports_every_backend_with_a_reason():
    report = kops.info()
    assert report["version"] == kops.__version__
    assert "torch" in report["backends"] and report["backends"]["torch"]["available"]
    for name, row in report["backends"].items():
        assert row["available"] or row["reason"], f"{name} is unavailable without a reason"
    json.dumps(report)  # serialisable


def test_command_line_info():
    result = subprocess.run([sys.executable, "-m", "kops", "info", "--json"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["backends"]["torch"]["available"] is True
    text = subprocess.run([sys.executable, "-m", "kops", "info"], capture_output=True, text=True, timeout=300)
    assert text.returncode == 0 and "backends:" in text.stdout


def test_memory_budget_configuration(monkeypatch):
    from kops.config import parse_bytes

    assert parse_bytes("512MB") == 512 * 10**6 and parse_bytes("2GiB") == 2 * 2**30 and parse_bytes(1000) == 1000
    with pytest.raises(ValueError, match="cannot read a memory size"):
        parse_bytes("lots")
    with pytest.raises(ValueError, match="must be positive"):
        parse_bytes(0)
    monkeypatch.setenv("KOPS_MEMORY_BUDGET", "3MiB")
    assert kops.get_memory_budget() == 3 * 2**20
    with kops.memory_budget("1MiB"):
        assert kops.get_memory_budget() == 2**20
    assert kops.get_memory_budget() == 3 * 2**20
    monkeypatch.delenv("KOPS_MEMORY_BUDGET")
    assert kops.get_memory_budget() > 2**20


def test_results_do_not_depend_on_the_block_size(generator):
    from kops.testing import random_problem

    x, z, v, bw = random_problem(300, 257, 9, 2, generator=generator)
    whole = kops.kmv(x, z, v, "laplacian", bw, backend="torch")
    with kops.memory_budget(4000):  # blocks of a few hundred pairs
        blocked = kops.kmv(x, z, v, "laplacian", bw, backend="torch")
        gblocked = torch.autograd.grad(kops.kmv(x.requires_grad_(), z, v, "laplacian", bw, backend="torch").sum(), x)[0]
    x.grad = None
    gwhole = torch.autograd.grad(kops.kmv(x, z, v, "laplacian", bw, backend="torch").sum(), x)[0]
    torch.testing.assert_close(blocked, whole)
    torch.testing.assert_close(gblocked, gwhole)


def test_a_backend_that_declares_nothing_supports_nothing():
    from kops.backends.registry import Backend

    class Forgetful(Backend):
        name = "torch"

    case = Case("kmv", torch.device("cpu"), torch.float32, 3, 3, 3, 1, "gaussian", "ieee")
    assert "declares no capabilities" in Forgetful().unsupported_reason(case)


def test_capabilities_give_one_sentence_per_limit():
    from kops.backends.registry import Capabilities

    caps = Capabilities(devices=("cuda",), ops=("kmv",), dtypes=(torch.float32,), precisions=("ieee",),
                        kernels=("gaussian",), max_d=8, max_c=2)

    def case(**kw):
        base = dict(op="kmv", device=torch.device("cuda"), dtype=torch.float32, n=3, m=3, d=3, c=1,
                    kernel="gaussian", precision="ieee")
        base.update(kw)
        return Case(**base)

    assert caps.reason(case(), "x") is None
    assert "CUDA tensors only" in caps.reason(case(device=torch.device("cpu")), "x")
    assert "kernel_matrix" in caps.reason(case(op="kernel_matrix"), "x")
    assert "float64" in caps.reason(case(dtype=torch.float64), "x")
    assert "'tf32'" in caps.reason(case(precision="tf32"), "x")
    assert "'cauchy'" in caps.reason(case(kernel="cauchy"), "x")
    assert "d = 9" in caps.reason(case(d=9), "x")
    assert "c = 3" in caps.reason(case(c=3), "x")
    assert "d <= 8" in caps.describe()


def test_each_backend_states_its_place_in_the_automatic_order():
    from kops.dispatch import auto_order

    assert auto_order("cuda") == ("cuda", "triton", "torch")
    assert auto_order("cpu")[-1] == "torch" and auto_order("cpu")[0] == "cpu"
    for backend in backends().values():
        assert backend.capabilities is not None, backend.name
