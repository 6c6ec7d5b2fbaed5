"""Model files: the fitted tensors in safetensors, everything else in a JSON header.

A model file is one safetensors file. Its tensors are ``centers`` (p, d) and ``weights``
(p, c) (and ``bandwidth`` for a tensor bandwidth); its metadata entry ``kops`` holds a JSON
header::

    {"format": "kops-model", "format_version": 1, "kops_version": "0.1.0",
     "estimator": "EigenPro4", "params": {...}, "kernel": {"name": "laplacian", "bandwidth": 10.0},
     "task": "classification", "classes": [0, 1, ...], "classes_kind": "int", "single_output": false,
     "n_features_in": 64, "dtype": "float32", "device": "cpu",
     "shapes": {"centers": [p, d], "weights": [p, c]}, "training": {"history": [...], ...},
     "sha256": "..."}

``sha256`` is the digest of the tensors' bytes (in name order), so a damaged file is an
error, never a wrong model. Tensors are stored from the CPU, so a model fitted on a GPU
loads on a machine without one (:func:`load_model` puts it on the saved device when that
exists, else on the CPU). The same container (:func:`write_tensor_file`,
:func:`read_tensor_file`) holds the solvers' checkpoints (:mod:`kops.solvers.checkpoint`).
Writes are atomic: a temporary file in the same directory, fsync, rename.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

__all__ = ["save_model", "load_model", "write_tensor_file", "read_tensor_file", "FORMAT_VERSION"]

#: the model file layout this version writes and the newest it reads
FORMAT_VERSION = 1
_MODEL_FORMAT = "kops-model"
#: fitted scalars recorded in the header's training record (when the estimator has them)
_TRAINING_ATTRIBUTES = ("fit_seconds_", "batch_size_", "step_size_", "lambda_max_", "projection_interval_",
                        "n_projections_", "block_reuse_", "span_preconditioner_", "jitter_")


def _safetensors():
    try:
        from safetensors.torch import load, save
    except ImportError:  # pragma: no cover - safetensors is a dependency
        raise ImportError("kops model files need safetensors: pip install safetensors "
                          "(a dependency of kops; reinstall with bash scripts/setup.sh)") from None
    return save, load


def tensor_digest(tensors: dict) -> str:
    """sha256 over the tensors' names, dtypes, shapes and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. platforms without directory descriptors
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def write_tensor_file(path, tensors: dict, header: dict) -> Path:
    """Atomically write ``tensors`` (name -> Tensor) and the JSON ``header`` to ``path``.

    The tensors are copied to the CPU; ``header["sha256"]`` is set to their digest. The file
    is written to a temporary name in the same directory, flushed with fsync and renamed over
    ``path``, so a reader (or a process killed at any moment) sees the old file or the new
    one, never a partial one.
    """
    save, _ = _safetensors()
    path = Path(path)
    cpu = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    header = dict(header, sha256=tensor_digest(cpu))
    data = save(cpu, metadata={"kops": json.dumps(header)})
    directory = path.parent if str(path.parent) else Path(".")
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 is for the temporary name only
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_directory(directory)
    return path


def read_tensor_file(path, expected_format: str, what: str = "model file"):
    """``(header, tensors)`` of a file written by :func:`write_tensor_file`.

    Raises ValueError naming the file when it is not a safetensors file, has no kops
    header, holds another format (``expected_format``), was written by a newer layout, or
    its tensors do not match their digest (a damaged file).
    """
    _, load = _safetensors()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist")
    raw = path.read_bytes()
    try:
        tensors = load(raw)
        size = int.from_bytes(raw[:8], "little")
        meta = json.loads(raw[8 : 8 + size].decode("utf-8")).get("__metadata__") or {}
        header = json.loads(meta["kops"])
    except Exception as exc:  # noqa: BLE001 - every parse failure means "not our file"
        raise ValueError(f"{str(path)!r} is not a kops {what} (or it is damaged): "
                         f"{type(exc).__name__}: {exc}") from None
    if header.get("format") != expected_format:
        raise ValueError(f"{str(path)!r} is not a kops {what}: its format is {header.get('format')!r}, "
                         f"expected {expected_format!r}")
    version = header.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(f"{str(path)!r} was written by kops {header.get('kops_version')} (layout {version}); "
                         f"this kops {_kops_version()} reads layouts up to {FORMAT_VERSION}: upgrade kops")
    if header.get("sha256") != tensor_digest(tensors):
        raise ValueError(f"{str(path)!r} is damaged: its tensors do not match the digest in its header")
    return header, tensors


def _kops_version() -> str:
    from . import __version__

    return __version__


def _jsonable(value):
    """A JSON value for a constructor parameter, or None when it has none (arrays, callables)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, torch.dtype):
        return str(value).replace("torch.", "")
    if isinstance(value, torch.device):
        return str(value)
    return None


def _training_record(model) -> dict:
    record = {"history": getattr(model, "history_", [])}
    for name in _TRAINING_ATTRIBUTES:
        value = getattr(model, name, None)
        if value is not None:
            record[name.rstrip("_")] = _jsonable(value)
    return record


def save_model(model, path) -> Path:
    """Write a fitted kops estimator to ``path`` (module docstring); returns the path.

    Raises
    ------
    NotFittedError
        When the model is not fitted.
    """
    model._check_fitted()
    kernel = model.kernel_
    tensors = {"centers": model.centers_, "weights": model.weights_}
    bandwidth = kernel.bandwidth
    if isinstance(bandwidth, torch.Tensor):
        tensors["bandwidth"] = bandwidth.detach()
        bandwidth = None
    classes = getattr(model, "classes_", None)
    params = {k: _jsonable(v) for k, v in model.get_params(deep=False).items()}
    if params.get("centers", 0) is None and getattr(model, "centers", None) is not None:
        params["centers"] = int(model.centers_.shape[0])  # an array of centers: its count
    header = {
        "format": _MODEL_FORMAT,
        "format_version": FORMAT_VERSION,
        "kops_version": _kops_version(),
        "estimator": type(model).__name__,
        "params": params,
        "kernel": {"name": kernel.name, "bandwidth": bandwidth},
        "task": "classification" if classes is not None else "regression",
        "classes": None if classes is None else classes.tolist(),
        "classes_kind": None if classes is None else classes.dtype.kind,
        "single_output": bool(model._single_output),
        "n_features_in": int(model.n_features_in_),
        "dtype": str(model.dtype_).replace("torch.", ""),
        "device": str(model.device_),
        "shapes": {k: list(v.shape) for k, v in tensors.items()},
        "training": _training_record(model),
    }
    return write_tensor_file(path, tensors, header)


def _estimator_class(name: str):
    from . import solvers

    cls = getattr(solvers, name, None)
    if cls is None or not isinstance(cls, type):
        raise ValueError(f"the model file names an unknown estimator {name!r}")
    return cls


def _load_device(saved: str, device):
    if device is not None:
        return torch.device(device)
    saved = torch.device(saved)
    if saved.type == "cuda" and not torch.cuda.is_available():
        return torch.device("cpu")  # a GPU-fitted model on a machine without one
    return saved


def load_model(path, device=None):
    """Read a model written by :func:`save_model` (``Estimator.save``).

    Parameters
    ----------
    path : str or Path
    device : str or torch.device, optional
        Where to put the model; default the device it was saved from when it exists here,
        else the CPU.

    Returns
    -------
    KernelModel
        A fitted estimator of the saved class (``predict``, ``score``, ``history_``).

    Raises
    ------
    ValueError
        For a file that is not a kops model, was written by a newer layout, is damaged, or
        whose tensor shapes contradict its header.
    """
    header, tensors = read_tensor_file(path, _MODEL_FORMAT, "model file")
    if header.get("kops_version") != _kops_version():
        warnings.warn(f"{str(path)!r} was saved by kops {header.get('kops_version')}, this is kops "
                      f"{_kops_version()}", UserWarning, stacklevel=2)
    cls = _estimator_class(header["estimator"])
    for name in ("centers", "weights"):
        if name not in tensors:
            raise ValueError(f"{str(path)!r} has no {name!r} tensor")
    centers, weights = tensors["centers"], tensors["weights"]
    d = header["n_features_in"]
    classes = header["classes"]
    if centers.dim() != 2 or centers.shape[1] != d:
        raise ValueError(f"{str(path)!r}: centers have shape {tuple(centers.shape)}, expected (p, {d})")
    if weights.dim() != 2 or weights.shape[0] != centers.shape[0]:
        raise ValueError(f"{str(path)!r}: weights have shape {tuple(weights.shape)}, expected "
                         f"({centers.shape[0]}, c)")
    if classes is not None and weights.shape[1] != len(classes):
        raise ValueError(f"{str(path)!r}: weights have {weights.shape[1]} outputs for {len(classes)} classes")
    for name, shape in header.get("shapes", {}).items():
        if name in tensors and list(tensors[name].shape) != list(shape):
            raise ValueError(f"{str(path)!r}: tensor {name!r} has shape {list(tensors[name].shape)}, "
                             f"its header says {shape}")
    params = {k: v for k, v in header["params"].items() if v is not None}
    try:
        model = cls(**{k: v for k, v in params.items() if k in cls._get_param_names()})
    except TypeError as exc:
        raise ValueError(f"{str(path)!r}: its parameters do not fit {cls.__name__}: {exc}") from None
    from .solvers._validation import kernel_of

    dev = _load_device(header["device"], device)
    bandwidth = header["kernel"]["bandwidth"]
    if bandwidth is None:
        bandwidth = tensors["bandwidth"].to(dev)
    model.kernel_ = kernel_of(header["kernel"]["name"], bandwidth)
    model.device_ = dev
    if "device" in model.get_params(deep=False) and params.get("device") is not None:
        model.set_params(device=str(dev))  # a refit runs where the model now lives
    model.dtype_ = getattr(torch, header["dtype"])
    model.centers_ = centers.to(dev)
    model.weights_ = weights.to(dev)
    model.n_features_in_ = d
    model._single_output = bool(header["single_output"])
    if classes is not None:
        model.classes_ = np.asarray(classes, dtype=np.str_ if header["classes_kind"] in "US" else None)
    training = header.get("training", {})
    model.history_ = training.get("history", [])
    for name in _TRAINING_ATTRIBUTES:
        if name.rstrip("_") in training:
            setattr(model, name, training[name.rstrip("_")])
    return model
