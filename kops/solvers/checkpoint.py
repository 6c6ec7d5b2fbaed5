"""Checkpoints of the iterative solvers: the full fit state on disk, and resuming from it.

A checkpoint directory holds two files (:mod:`kops.serialization`'s container: safetensors
plus a JSON header, written atomically: temporary file, fsync, rename):

* ``setup.safetensors``, written once when the epochs start: every tensor of the set-up
  (the preconditioner and the projector with their factors, the centers), which stays
  fixed during the fit;
* ``state.safetensors``, rewritten every ``every`` batches or ``every_seconds`` seconds
  and when the fit ends: the iteration state (the weights; EigenPro 4's pending buffer,
  cached predictions and pending corrections), the weights of the last good epoch, the
  generator's state now and at the start of the epoch, the epoch and batch position, the
  best objective and ``history_``.

Resuming (``resume=True``) re-runs the set-up (the same seed and data give the same
draws), checks that the checkpoint belongs to this estimator class, parameters and data
(a digest of X, Y and the sample weights), copies the saved set-up tensors over the fresh ones, restores the
iteration state and the generator, redraws the interrupted epoch's batch order from the
saved start-of-epoch generator state and continues with the next batch. On the CPU the
resumed fit ends with exactly the model of an uninterrupted fit with the same seed.

The loop (:meth:`kops.solvers.base.KernelModel._run_epochs`) calls :meth:`Checkpointer.start`,
:meth:`~Checkpointer.after_batch`, :meth:`~Checkpointer.after_epoch` and
:meth:`~Checkpointer.finish`; the fit calls :meth:`~Checkpointer.begin` with the data.
Mutable solver state must live in the state object's ``state_dict()`` (the set-up file is
written once).
"""
from __future__ import annotations

import contextlib
import hashlib
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..serialization import FORMAT_VERSION, read_tensor_file, write_tensor_file

__all__ = ["Checkpointer", "checkpointing", "LoopPosition", "WeightsState", "CheckpointError",
           "STATE_FILE", "SETUP_FILE"]

CHECKPOINT_FORMAT = "kops-checkpoint"
SETUP_FORMAT = "kops-checkpoint-setup"
STATE_FILE = "state.safetensors"
SETUP_FILE = "setup.safetensors"
#: parameters that may change between the interrupted fit and its resumption
_FREE_PARAMS = ("epochs", "verbose", "callback", "process_group", "data_sharding")
#: the set-up's fitted attributes, walked for tensors
_SETUP_ATTRIBUTES = ("preconditioner_", "projector_", "centers_")
#: the set-up's scalars, which must agree on resume
_SETUP_SCALARS = ("batch_size_", "projection_interval_", "span_preconditioner_", "block_reuse_")


class CheckpointError(ValueError):
    """A checkpoint that is damaged, of another format, or of another fit."""


@dataclass
class LoopPosition:
    """Where the epoch loop is: the next batch ``batch`` (0-based) of epoch ``epoch``
    (1-based), the generator state the epoch's order was drawn from (None at an epoch
    boundary) and the best objective so far."""

    epoch: int = 1
    batch: int = 0
    epoch_rng: torch.Tensor | None = None
    best: float = math.inf


class WeightsState:
    """The iteration state of solvers whose state is their weights (EigenPro 2 and 3)."""

    def __init__(self, model):
        self.model = model

    def state_dict(self) -> dict:
        return {"weights": self.model.weights_.detach().cpu().clone()}

    def load_state_dict(self, state: dict) -> None:
        w = self.model.weights_
        src = state.get("weights")
        if src is None or tuple(src.shape) != tuple(w.shape):
            raise CheckpointError(f"the saved weights have shape {None if src is None else tuple(src.shape)}, "
                                  f"this fit has {tuple(w.shape)}")
        w.copy_(src)


def _setup_tensors(model, data_storage=None) -> dict:
    """Every tensor reachable from the set-up attributes (name -> tensor, each once), except
    those in the training data's storage ``data_storage`` (EigenPro 2's centers are X,
    which the data digest already pins)."""
    found, seen = {}, set()

    def walk(obj, name, depth):
        if id(obj) in seen or depth > 6:
            return
        seen.add(id(obj))
        if isinstance(obj, torch.Tensor):
            if data_storage is None or obj.untyped_storage().data_ptr() != data_storage:
                found[name] = obj
            return
        if type(obj).__module__.startswith("kops.") and hasattr(obj, "__dict__") \
                and not type(obj).__module__.startswith("kops.kernels"):
            for key, value in vars(obj).items():
                if isinstance(value, torch.Tensor) or type(value).__module__.startswith("kops."):
                    walk(value, f"{name}.{key}", depth + 1)

    for attr in _SETUP_ATTRIBUTES:
        if hasattr(model, attr):
            walk(getattr(model, attr), attr, 0)
    return found


def _jsonable_params(model) -> dict:
    out = {}
    for key, value in model.get_params(deep=False).items():
        if key in _FREE_PARAMS:
            continue
        if isinstance(value, torch.Tensor) or hasattr(value, "__array__"):
            value = "array sha256 " + _digest(torch.as_tensor(value))
        elif not (value is None or isinstance(value, (bool, int, float, str))):
            value = repr(value)
        out[key] = value
    return out


def _digest(*tensors) -> str:
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _split_state(state: dict):
    tensors = {f"state.{k}": v for k, v in state.items() if isinstance(v, torch.Tensor)}
    scalars = {k: v for k, v in state.items() if not isinstance(v, torch.Tensor)}
    return tensors, scalars


class Checkpointer:
    """Writes checkpoints of a fit to ``directory`` and resumes from them (module docstring).

    Parameters
    ----------
    directory : str or Path
    every : int, optional
        Write after every ``every`` batches.
    every_seconds : float, optional
        Write after a batch when ``every_seconds`` have passed since the last write.
        With neither, only the end of the fit is written.
    resume : bool, default False
        Continue from the checkpoint in ``directory`` when there is one (else start anew).
        Without it, a directory that already holds a checkpoint is an error.

    Attributes
    ----------
    resumed_from : LoopPosition or None
        Where the fit resumed (None for a fresh fit).
    writes : int
        State files written by this fit.
    """

    def __init__(self, directory, *, every=None, every_seconds=None, resume=False):
        if every is not None and (isinstance(every, bool) or not isinstance(every, int) or every < 1):
            raise ValueError(f"every must be a positive number of batches, got {every!r}")
        if every_seconds is not None and not (isinstance(every_seconds, (int, float)) and every_seconds > 0):
            raise ValueError(f"every_seconds must be a positive number of seconds, got {every_seconds!r}")
        self.directory = Path(directory)
        if self.directory.exists() and not self.directory.is_dir():
            raise ValueError(f"checkpoint directory {str(self.directory)!r} is a file")
        self.every, self.every_seconds, self.resume = every, every_seconds, bool(resume)
        self.resumed_from = None
        self.writes = 0
        self.writer = True  # whether this process writes the files (one rank of a sharded fit)
        self._data = None
        self._since, self._last = 0, time.monotonic()

    @property
    def state_path(self) -> Path:
        return self.directory / STATE_FILE

    @property
    def setup_path(self) -> Path:
        return self.directory / SETUP_FILE

    # ------------------------------------------------------------------ the fit's hooks
    def begin(self, model, X, Y) -> None:
        """Identify the fit: estimator class, parameters and a digest of the data."""
        if not self.resume and self.state_path.exists():
            raise CheckpointError(f"checkpoint directory {str(self.directory)!r} already holds a checkpoint: "
                                  "resume it (--resume) or choose another directory")
        w = model._sample_weight_tensor()  # sample weights are part of the data (none: the digest of X, Y)
        self._data = {"n": int(X.shape[0]), "d": int(X.shape[1]), "c": int(Y.shape[1]),
                      "sha256": _digest(X, Y, *(() if w is None else (w,)))}
        self._data_storage = X.untyped_storage().data_ptr()

    def _identity(self, model) -> dict:
        return {"estimator": type(model).__name__, "params": _jsonable_params(model), "data": self._data}

    def _setup_record(self, model) -> dict:
        return {k: getattr(model, k) for k in _SETUP_SCALARS if hasattr(model, k)}

    def start(self, model, state, good) -> LoopPosition:
        """Called when the epochs start: resume (restore everything) or write the set-up."""
        if self._data is None:
            raise RuntimeError("Checkpointer.begin was not called (attach the checkpointer before fit)")
        self._since, self._last = 0, time.monotonic()
        if self.resume and self.state_path.exists():
            position = self._restore(model, state, good)
            self.resumed_from = position
            return position
        self._setup_digest = self._write_setup(model)
        return LoopPosition()

    def after_batch(self, model, state, good, position: LoopPosition) -> None:
        self._since += 1
        due = self.every is not None and self._since >= self.every
        due = due or (self.every_seconds is not None and time.monotonic() - self._last >= self.every_seconds)
        if self._agreed(due):
            self.save(model, state, good, position)

    def after_epoch(self, model, state, good, position: LoopPosition) -> None:
        if self._agreed(self.every_seconds is not None and time.monotonic() - self._last >= self.every_seconds):
            self.save(model, state, good, position)

    # hooks of a sharded fit (kops.distributed.checkpoint), identities here
    def _agreed(self, due: bool) -> bool:
        """Whether to write now (the processes of a sharded fit take one rank's decision)."""
        return due

    def _full_good(self, good):
        """The last good epoch's weights as saved (all rows)."""
        return good

    def _restore_good(self, good, saved) -> None:
        good.copy_(saved)

    def _setup_tensors(self, model) -> dict:
        return _setup_tensors(model, self._data_storage)

    def finish(self, model, state, good, position: LoopPosition) -> None:
        self.save(model, state, good, position, complete=True)

    # ------------------------------------------------------------------------ files
    def _write_setup(self, model) -> str:
        tensors = self._setup_tensors(model)
        header = {"format": SETUP_FORMAT, "format_version": FORMAT_VERSION, "kops_version": _version(),
                  **self._identity(model), **self._setup_extent()}
        if not self.writer:
            return ""
        write_tensor_file(self.setup_path, tensors, header)
        return read_tensor_file(self.setup_path, SETUP_FORMAT, "checkpoint set-up file")[0]["sha256"]

    def _setup_extent(self) -> dict:
        """Header entries saying which set-up tensors the file holds (all of them here)."""
        return {}

    def save(self, model, state, good, position: LoopPosition, complete: bool = False) -> Path:
        """Write the state file now."""
        tensors, scalars = _split_state(state.state_dict())
        tensors["good_weights"] = self._full_good(good)
        if not self.writer:
            return self.state_path
        tensors["rng.current"] = model.generator_.get_state()
        if position.epoch_rng is not None:
            tensors["rng.epoch"] = position.epoch_rng
        projector = getattr(model, "projector_", None)
        header = {
            "format": CHECKPOINT_FORMAT, "format_version": FORMAT_VERSION, "kops_version": _version(),
            **self._identity(model),
            "setup": {"sha256": self._setup_digest, **self._setup_record(model)},
            "position": {"epoch": position.epoch, "batch": position.batch,
                         "best": position.best if math.isfinite(position.best) else None},
            "complete": complete,
            "state": scalars,
            "history": model.history_,
            "train_seconds": model._train_seconds,
            "projector": {k: list(getattr(projector, k, [])) for k in ("steps_", "residuals_")},
        }
        write_tensor_file(self.state_path, tensors, header)
        self.writes += 1
        self._since, self._last = 0, time.monotonic()
        return self.state_path

    def _mismatch(self, what, saved, now):
        return CheckpointError(f"the checkpoint in {str(self.directory)!r} belongs to another fit: its {what} "
                               f"is {saved!r}, this fit's is {now!r}. Resume with the same data and "
                               "parameters, or choose another checkpoint directory")

    def _check_identity(self, header, model):
        now = self._identity(model)
        for key in ("estimator", "params", "data"):
            if header.get(key) != now[key]:
                if key == "params":
                    diff = {k: v for k, v in header.get(key, {}).items() if now[key].get(k) != v}
                    raise self._mismatch("parameters", diff, {k: now[key].get(k) for k in diff})
                raise self._mismatch({"data": "data (n, d, c, digest of X, y and sample_weight)"}.get(key, key), header.get(key), now[key])

    def _restore(self, model, state, good) -> LoopPosition:
        try:
            header, tensors = read_tensor_file(self.state_path, CHECKPOINT_FORMAT, "checkpoint")
            setup_header, setup = read_tensor_file(self.setup_path, SETUP_FORMAT, "checkpoint set-up file")
        except (ValueError, FileNotFoundError) as exc:
            raise CheckpointError(f"cannot resume from {str(self.directory)!r}: {exc}") from None
        self._check_identity(header, model)
        if header["setup"]["sha256"] != setup_header["sha256"]:
            raise CheckpointError(f"the checkpoint in {str(self.directory)!r} does not match its set-up file "
                                  f"({SETUP_FILE} is from another fit)")
        for key, value in self._setup_record(model).items():
            if key in header["setup"] and header["setup"][key] != value:  # a sharded fit omits block_reuse_
                raise self._mismatch(f"set-up {key}", header["setup"].get(key), value)
        fresh = self._setup_tensors(model)
        if setup_header.get("partial_setup") or self._setup_extent():
            # a sharded fit writes and reads only the set-up every world size shares
            common = set(fresh) & set(setup)
            fresh, setup = {k: fresh[k] for k in common}, {k: setup[k] for k in common}
        if set(fresh) != set(setup):
            raise CheckpointError(f"the set-up saved in {str(self.directory)!r} has tensors {sorted(setup)}, "
                                  f"this fit's set-up has {sorted(fresh)}")
        for name, dst in fresh.items():
            src = setup[name]
            if src.shape != dst.shape or src.dtype != dst.dtype:
                raise CheckpointError(f"saved set-up tensor {name} is {src.dtype} {tuple(src.shape)}, "
                                      f"this fit's is {dst.dtype} {tuple(dst.shape)}")
            dst.copy_(src)
        self._setup_digest = setup_header["sha256"]
        saved = {k[len("state."):]: v for k, v in tensors.items() if k.startswith("state.")}
        saved.update(header["state"])
        try:
            state.load_state_dict(saved)
        except ValueError as exc:
            raise CheckpointError(f"cannot resume from {str(self.directory)!r}: {exc}") from None
        self._restore_good(good, tensors["good_weights"])
        model.generator_.set_state(tensors["rng.current"])
        model.history_ = list(header["history"])
        model._train_seconds = float(header["train_seconds"])
        projector = getattr(model, "projector_", None)
        for key, values in header.get("projector", {}).items():
            if projector is not None and hasattr(projector, key):
                setattr(projector, key, list(values))
        pos = header["position"]
        best = math.inf if pos["best"] is None else float(pos["best"])
        return LoopPosition(int(pos["epoch"]), int(pos["batch"]), tensors.get("rng.epoch"), best)


def read_checkpoint_header(directory) -> dict:
    """The JSON header of the state file in ``directory`` (position, history, identity)."""
    return read_tensor_file(Path(directory) / STATE_FILE, CHECKPOINT_FORMAT, "checkpoint")[0]


@contextlib.contextmanager
def checkpointing(model, directory, *, every=None, every_seconds=None, resume=False):
    """``with checkpointing(model, "ckpt", every=100, resume=True): model.fit(X, y)``.

    Attaches a :class:`Checkpointer` to ``model`` for the fits inside the block; yields it.
    """
    checkpointer = Checkpointer(directory, every=every, every_seconds=every_seconds, resume=resume)
    previous = getattr(model, "_checkpointer", None)
    model._checkpointer = checkpointer
    try:
        yield checkpointer
    finally:
        if previous is None:
            del model._checkpointer
        else:
            model._checkpointer = previous


def _version() -> str:
    from .. import __version__

    return __version__

