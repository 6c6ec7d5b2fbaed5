"""Model files (kops.serialization): round trips, GPU-saved files on the CPU, bad files."""
import json

import numpy as np
import pytest
import torch

import kops
from kops.serialization import read_tensor_file, write_tensor_file


def _problem(seed, n=150, d=5):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(np.float32)
    return X, rng


FITS = {
    "eigenpro4-int-labels": lambda X, rng: (kops.EigenPro4("gaussian", 2.0, centers=40, epochs=2, random_state=0),
                                            (X[:, 0] > 0).astype(int) * 3 + 1),
    "eigenpro3-string-labels": lambda X, rng: (kops.EigenPro3("laplacian", 2.0, centers=30, epochs=2, random_state=0),
                                               np.where(X[:, 1] > 0, "cat", "dog")),
    "eigenpro2-2d-regression": lambda X, rng: (kops.EigenPro2("matern52", 2.0, epochs=2, random_state=0,
                                                              dtype="float64"), np.c_[X[:, 0], X[:, 1] ** 2]),
    "exact-1d-regression": lambda X, rng: (kops.ExactKernelRidge("cauchy", 1.5, centers=50, ridge=1e-3),
                                           np.sin(X[:, 0])),
}


@pytest.mark.parametrize("case", sorted(FITS))
def test_save_load_round_trip(case, tmp_path):
    X, rng = _problem(1)
    model, y = FITS[case](X, rng)
    model.fit(X, y)
    path = tmp_path / "model.safetensors"
    model.save(path)
    loaded = kops.load(path)
    assert type(loaded) is type(model)
    Xt = rng.standard_normal((37, X.shape[1])).astype(np.float32)
    np.testing.assert_array_equal(loaded.predict(Xt), model.predict(Xt))
    assert loaded.score(X, y) == model.score(X, y)
    assert torch.equal(loaded.weights_, model.weights_.cpu()) and loaded.weights_.dtype == model.weights_.dtype
    assert loaded.history_ == getattr(model, "history_", [])
    assert loaded.kernel_.name == model.kernel_.name and loaded.kernel_.bandwidth == model.kernel_.bandwidth
    header, _ = read_tensor_file(path, "kops-model")
    assert header["kops_version"] == kops.__version__ and header["estimator"] == type(model).__name__


@pytest.fixture
def gpu_saved_model(tmp_path):
    """A model file as a GPU fit writes it (header device cuda:0; tensors are always stored
    from the CPU), made without a GPU by rewriting the header."""
    X, rng = _problem(2)
    model = kops.EigenPro4("gaussian", 2.0, centers=40, epochs=1, random_state=0).fit(X, (X[:, 0] > 0).astype(int))
    path = tmp_path / "gpu.safetensors"
    model.save(path)
    header, tensors = read_tensor_file(path, "kops-model")
    header["device"] = "cuda:0"
    write_tensor_file(path, tensors, header)
    return path, model, X


def test_gpu_saved_model_loads_on_cpu(gpu_saved_model):
    path, model, X = gpu_saved_model
    loaded = kops.load(path, device=None if not torch.cuda.is_available() else "cpu")
    assert loaded.device_.type == "cpu" and loaded.weights_.device.type == "cpu"
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))


def test_bad_model_files_are_clear_errors(tmp_path):
    X, rng = _problem(3)
    model = kops.EigenPro3("gaussian", 2.0, centers=20, epochs=1, random_state=0).fit(X, X[:, 0])
    path = tmp_path / "m.safetensors"
    model.save(path)
    raw = path.read_bytes()
    damaged = tmp_path / "damaged.safetensors"
    damaged.write_bytes(raw[:-1] + bytes([raw[-1] ^ 1]))
    with pytest.raises(ValueError, match="damaged"):
        kops.load(damaged)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="not a kops model file"):
        kops.load(truncated)
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(3)}, foreign)
    with pytest.raises(ValueError, match="not a kops model file"):
        kops.load(foreign)
    header, tensors = read_tensor_file(path, "kops-model")
    write_tensor_file(tmp_path / "newer.safetensors", tensors, dict(header, format_version=99))
    with pytest.raises(ValueError, match="upgrade kops"):
        kops.load(tmp_path / "newer.safetensors")
    write_tensor_file(tmp_path / "shape.safetensors", tensors, dict(header, n_features_in=7))
    with pytest.raises(ValueError, match="centers have shape"):
        kops.load(tmp_path / "shape.safetensors")
    write_tensor_file(tmp_path / "old.safetensors", tensors, dict(header, kops_version="0.0.1"))
    with pytest.warns(UserWarning, match="saved by kops 0.0.1"):
        kops.load(tmp_path / "old.safetensors")
    with pytest.raises(FileNotFoundError):
        kops.load(tmp_path / "missing.safetensors")
    with pytest.raises(kops.solvers.base.NotFittedError):
        kops.EigenPro4().save(tmp_path / "unfitted.safetensors")
    assert json.loads(json.dumps(header))["shapes"]["centers"] == [20, 5]
