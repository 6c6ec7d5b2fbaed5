"""Progress of a fit on the command line.

* a terminal (stderr is a tty) with tqdm installed: a bar over the epochs and one over the
  current epoch's points, with the running loss ``1/2 mean ||f(x) - y||^2`` of the batches;
* otherwise: one plain line per epoch on stderr;
* ``--quiet``: nothing;
* ``--json``: one JSON record per epoch on stdout (``{"event": "epoch", ...}``, the keys
  of ``history_``), whatever the display; the command adds a final summary record.
"""
from __future__ import annotations

import json
import math
import sys

__all__ = ["FitReporter", "json_line"]


def json_line(record: dict, stream=None) -> None:
    """Print one JSON record (non-finite floats as null) and flush."""
    clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
    print(json.dumps(clean), file=stream or sys.stdout, flush=True)


def _format_record(record: dict, epochs: int) -> str:
    parts = [f"epoch {record['epoch']}/{epochs}"]
    for key in ("train_accuracy", "val_accuracy", "train_mse", "val_mse", "objective"):
        if key in record:
            parts.append(f"{key} {record[key]:.4g}")
    parts.append(f"{record['seconds']:.2f} s")
    return "  ".join(parts)


class _BatchBar:
    """The per-epoch bar (tqdm), fed by the solvers' epoch loop."""

    def __init__(self, tqdm, total, label):
        self.bar = tqdm(total=total, desc=label, unit="pt", leave=False, position=1, file=sys.stderr,
                        dynamic_ncols=True)
        self.done, self.residual, self.seen = 0, 0.0, 0

    def update(self, done, residual=None):
        if residual is not None:
            first = self.seen == 0
            self.residual += residual
            self.seen += done - self.done
            # tqdm redraws at most every 0.1 s: draw the first batch's loss at once, so that a
            # fast epoch shows it too
            self.bar.set_postfix(loss=f"{0.5 * self.residual / max(1, self.seen):.4g}", refresh=first)
        self.bar.update(done - self.done)
        self.done = done

    def close(self):
        self.bar.close()


class _Silent:
    def __init__(self, *args, **kwargs):
        pass

    def update(self, done, residual=None):
        pass

    def close(self):
        pass


class FitReporter:
    """Shows a fit's progress (module docstring); ``attach`` wires it into an estimator.

    Parameters
    ----------
    epochs : int
    quiet : bool
    as_json : bool
        Epoch records as JSON lines on stdout.
    """

    def __init__(self, epochs: int, *, quiet: bool = False, as_json: bool = False):
        self.epochs, self.quiet, self.as_json = epochs, quiet, as_json
        self.tqdm = None
        if not quiet and sys.stderr.isatty():
            try:
                from tqdm.auto import tqdm

                self.tqdm = tqdm
            except ImportError:  # plain lines without tqdm (the kops[progress] extra)
                self.tqdm = None
        self.epoch_bar = None

    def attach(self, model) -> None:
        """Route the model's per-batch progress and per-epoch records here."""
        model._progress_factory = self._batch_progress
        if "callback" in model.get_params(deep=False):
            model.set_params(callback=self.on_epoch)

    def _batch_progress(self, total, label, enabled):
        if self.tqdm is None:
            return _Silent()
        if self.epoch_bar is None:
            self.epoch_bar = self.tqdm(total=self.epochs, desc="epochs", unit="epoch", position=0,
                                       file=sys.stderr, dynamic_ncols=True)
        return _BatchBar(self.tqdm, total, label)

    def on_epoch(self, model, record) -> bool:
        if self.as_json:
            json_line({"event": "epoch", **record})
        if self.epoch_bar is not None:
            self.epoch_bar.n = record["epoch"]
            shown = {k: f"{record[k]:.4g}" for k in ("train_accuracy", "val_accuracy", "val_mse") if k in record}
            self.epoch_bar.set_postfix(shown)
        elif not self.quiet:
            print(_format_record(record, self.epochs), file=sys.stderr, flush=True)
        return False

    def close(self) -> None:
        if self.epoch_bar is not None:
            self.epoch_bar.close()
            self.epoch_bar = None
