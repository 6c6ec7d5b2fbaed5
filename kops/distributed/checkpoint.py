"""Checkpoints of a sharded fit, in the single-process format, and resuming them on any world size.

A sharded fit (:mod:`kops.distributed.estimators`) takes the :class:`~kops.solvers.checkpoint.Checkpointer`
attached to it (``checkpointing(model, DIR)``, ``kops fit --checkpoint DIR`` under torchrun)
and runs it through :class:`ShardedCheckpointer`:

* the state is written **gathered**, as the single-process solver writes it
  (:class:`GatheredState`: all p rows of the weights; EigenPro 4's state with an empty
  pending buffer; the full-gradient state with all rows of ``alpha`` and ``d``), so a
  checkpoint of a sharded fit resumes on one process, on the same number of processes, or
  on another number, and a single-process checkpoint written at an epoch end resumes
  sharded; on resume each rank keeps its rows (``Shard(p, rank, P).slice``);
* only rank 0 writes the files; every rank reads them on resume (the directory must be
  the same on every rank: one machine, or a shared filesystem);
* the decision to write (every N batches or seconds) is rank 0's, broadcast, so every rank
  takes part in the same gathers;
* the set-up file holds the set-up every world size shares (the preconditioner, all the
  centers); the projector's tensors, which a sharded fit keeps by rows, are recomputed on
  resume from the same seed (the set-up is replicated on every rank).

The sharded solvers step through whole epochs, so their checkpoints are written at epoch
ends: ``every`` counts the epoch's batches (a checkpoint after the first epoch end at which
``every`` batches have passed since the last one). A checkpoint written mid-epoch by a
single-process fit is refused with a clear error (resume it on one process).
"""
from __future__ import annotations

import torch

from ..solvers.checkpoint import Checkpointer, CheckpointError, WeightsState
from ..solvers.iterations import FullGradientDescent
from .group import all_gather_rows, all_reduce, broadcast
from .steps import ShardedDelayedProjection

__all__ = ["ShardedCheckpointer", "GatheredState"]


def _on_rows(full: torch.Tensor, model) -> torch.Tensor:
    """This rank's rows of a saved p-row tensor, checked against the model's p."""
    shard = model.shard_
    if full.shape[0] != shard.p:
        raise CheckpointError(f"the checkpoint holds {full.shape[0]} rows of weights, this fit has {shard.p}")
    return full[shard.slice]


class GatheredState:
    """A sharded iteration state seen as the single-process one (``state_dict`` gathers,
    ``load_state_dict`` keeps this rank's rows; both are collectives).

    Parameters
    ----------
    model : a sharded estimator
        With ``shard_`` and ``process_group_``.
    state : ShardedDelayedProjection, ShardedFullGradientDescent or None
        None: the state is the weights (EigenPro 2 and 3).
    """

    def __init__(self, model, state=None):
        self.model, self.state = model, state

    def _gather(self, t):
        return all_gather_rows(t, self.model.shard_, self.model.process_group_).detach().cpu().clone()

    def state_dict(self) -> dict:
        state = self.state
        if isinstance(state, FullGradientDescent):
            out = {"alpha": self._gather(state.alpha), "step": state.step, "steps": list(state.steps_)}
            if state.d is not None:
                out["d"] = self._gather(state.d)
            return out
        if isinstance(state, ShardedDelayedProjection):
            return self._delayed_state_dict(state)
        return {"weights": self._gather(self.model.weights_)}

    def _delayed_state_dict(self, state: ShardedDelayedProjection) -> dict:
        """EigenPro 4's single-process state at an epoch end (every epoch ends projected)."""
        if state.pending:
            raise RuntimeError("a sharded EigenPro 4 state is saved only at epoch ends (nothing pending)")
        alpha = self._gather(state.alpha)
        rows = state.corr.global_rows
        out = {"pending_points": torch.empty(0, self.model.centers_.shape[1], dtype=alpha.dtype),
               "weights": alpha, "h": torch.zeros_like(alpha),
               "a_c": torch.zeros(alpha.shape[0] if rows is None else rows.shape[0], alpha.shape[1],
                                  dtype=alpha.dtype)}
        if state.f_rows is not None:  # f on the correction's rows, in its (global) order
            if rows is None:
                out["f_rows"] = self._gather(state.f_rows)
            else:
                full = state.f_rows.new_zeros(rows.shape[0], state.f_rows.shape[1])
                full[state.corr.sel] = state.f_rows
                out["f_rows"] = all_reduce(full, self.model.process_group_).cpu().clone()
        out.update(end=alpha.shape[0], pending=0, n_projections=state.n_projections)
        return out

    def load_state_dict(self, saved: dict) -> None:
        state, model = self.state, self.model
        if isinstance(state, FullGradientDescent):
            if "alpha" not in saved:
                raise CheckpointError("the checkpoint is not of a full-gradient fit (no 'alpha')")
            local = {"alpha": _on_rows(saved["alpha"], model), "step": saved["step"], "steps": saved["steps"]}
            if saved.get("d") is not None:
                local["d"] = _on_rows(saved["d"], model)
            state.load_state_dict(local)
            return
        if isinstance(state, ShardedDelayedProjection):
            if int(saved.get("pending", 0)) or int(saved.get("end", state.p)) != model.shard_.p:
                raise CheckpointError("the checkpoint was written with pending batches (mid-epoch, by a single "
                                      "process): a sharded fit resumes only from an epoch end; resume it on one "
                                      "process")
            state.alpha.copy_(_on_rows(saved["weights"], model))
            state.n_projections = int(saved["n_projections"])
            if state.f_rows is not None:
                state.f_rows.copy_(state._f_rows())
            return
        WeightsState(model).load_state_dict({"weights": _on_rows(saved["weights"], model)})


class ShardedCheckpointer(Checkpointer):
    """A :class:`~kops.solvers.checkpoint.Checkpointer` for the ranks of a sharded fit (module
    docstring). Built from the checkpointer attached to the estimator; :meth:`detach` copies
    what the fit learnt (``resumed_from``, ``writes``) back to it."""

    def __init__(self, original: Checkpointer, model, batches_per_epoch: int):
        super().__init__(original.directory, every=original.every, every_seconds=original.every_seconds,
                         resume=original.resume)
        self.original, self.model = original, model
        self._data, self._data_storage = original._data, original._data_storage
        self.writer = model.rank_ == 0
        self.batches_per_epoch = batches_per_epoch

    def detach(self) -> None:
        self.original.resumed_from, self.original.writes = self.resumed_from, self.writes

    def after_batch(self, model, state, good, position) -> None:
        # one call per (whole) epoch: count its batches
        self._since += self.batches_per_epoch - 1
        super().after_batch(model, state, good, position)

    def _agreed(self, due: bool) -> bool:
        flag = torch.tensor([1.0 if due else 0.0], dtype=torch.float64, device=self.model._comm_device())
        return bool(broadcast(flag, self.model.process_group_).item())

    def _full_good(self, good):
        return all_gather_rows(good, self.model.shard_, self.model.process_group_)

    def _restore_good(self, good, saved) -> None:
        good.copy_(_on_rows(saved, self.model))

    def _setup_tensors(self, model) -> dict:
        tensors = {k: v for k, v in super()._setup_tensors(model).items() if k.startswith("preconditioner_.")}
        tensors["centers_"] = model.all_centers_
        if getattr(model, "_single", None) is not None and model._single.__name__ == "EigenPro2":
            tensors.pop("centers_")  # EigenPro 2's centers are X, pinned by the data digest
        return tensors

    def _setup_extent(self) -> dict:
        return {"partial_setup": True}

    def _setup_record(self, model) -> dict:
        record = super()._setup_record(model)
        record.pop("block_reuse_", None)  # depends on the shard's size, not on the model
        return record

    def _restore(self, model, state, good):
        position = super()._restore(model, state, good)
        if position.batch or position.epoch_rng is not None:
            raise CheckpointError(f"the checkpoint in {str(self.directory)!r} was written mid-epoch (epoch "
                                  f"{position.epoch}, batch {position.batch}) by a single process: a sharded fit "
                                  "resumes only from an epoch end; resume it on one process")
        return position
