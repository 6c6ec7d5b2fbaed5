"""The command line's arguments: the parser and the checks of every value.

A bad value ends the command with one line, ``kops CMD: error: argument --NAME: ...``, and
exit status 2 (argparse's convention, without the usage block).
"""
from __future__ import annotations

import argparse

import torch

from ..kernels import KERNELS
from .data_io import FORMATS

__all__ = ["build_parser", "SOLVER_NAMES"]

SOLVER_NAMES = ("eigenpro4", "eigenpro3", "eigenpro2", "exact")


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error (the usage stays behind ``--help``)."""

    def error(self, message):  # noqa: D102 - argparse's hook
        from .distributed import report_error

        report_error(f"{self.prog}: error: {message} (see {self.prog} --help)")  # once under torchrun
        self.exit(2)


def _int_at_least(low: int, what: str):
    """An argparse type: an int >= ``low``, else one line saying ``what`` was expected."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        return value
    return parse


positive_int = _int_at_least(1, "a positive integer")
nonnegative_int = _int_at_least(0, "an integer >= 0")


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def positive_float(text: str) -> float:
    value = _number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def nonnegative_float(text: str) -> float:
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text!r}")
    return value


def split_fraction(text: str) -> float:
    value = _number(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be a fraction in [0, 1), got {text!r}")
    return value


def device_name(text: str) -> str:
    """A torch device that exists here (``cuda`` without a usable GPU is an error)."""
    try:
        device = torch.device(text)
    except (RuntimeError, TypeError):
        raise argparse.ArgumentTypeError(f"unknown device {text!r}; use cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch has no CUDA support" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise argparse.ArgumentTypeError(f"{text!r} is not available: {why}; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise argparse.ArgumentTypeError(f"{text!r} does not exist: {torch.cuda.device_count()} CUDA device(s)")
    elif device.type != "cpu":
        raise argparse.ArgumentTypeError(f"unsupported device {text!r}; use cpu, cuda or cuda:N")
    return str(device)


def memory_size(text: str) -> int:
    from ..config import parse_bytes

    try:
        return parse_bytes(text)
    except (TypeError, ValueError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def checkpoint_interval(text: str):
    """``N`` (batches) or ``Ns`` (seconds) -> ("batches", N) or ("seconds", N)."""
    unit = "seconds" if text.endswith("s") else "batches"
    number = text[:-1] if unit == "seconds" else text
    try:
        value = float(number) if unit == "seconds" else int(number)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of batches (100) or of seconds (30s), got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text!r}")
    return unit, value


def png_path(text: str) -> str:
    if not text.lower().endswith(".png"):
        raise argparse.ArgumentTypeError(f"must be a .png file, got {text!r}")
    return text


def _kernel_names():
    return sorted(set(KERNELS) | {"rbf", "rational_quadratic"})


def _add_data_arguments(p, with_target=True):
    p.add_argument("data", metavar="DATA", help="a data file (.csv .tsv .npy .npz .svm/.libsvm .parquet) "
                   "or sklearn:NAME (digits, iris, wine, breast_cancer, diabetes)")
    p.add_argument("--format", choices=FORMATS, help="the data format (default: from the suffix)")
    if with_target:
        p.add_argument("--target", metavar="COL", help="the target column (name or index) or .npz key")
        p.add_argument("--y", metavar="FILE", dest="y_file", help="a separate targets file (.npy .csv .tsv)")


def _add_fit_arguments(p):
    _add_data_arguments(p)
    p.add_argument("--solver", choices=SOLVER_NAMES, default="eigenpro4")
    p.add_argument("--kernel", choices=_kernel_names(), default="laplacian")
    p.add_argument("--bandwidth", type=positive_float, help="default: the median pairwise distance")
    p.add_argument("--centers", type=positive_int, help="p centers drawn from the training points "
                   "(EigenPro 3 / 4, exact); at most the number of training points")
    p.add_argument("--epochs", type=nonnegative_int, default=5)
    p.add_argument("--batch-size", type=positive_int, help="default: the critical batch size")
    p.add_argument("--ridge", type=nonnegative_float, default=0.0)
    p.add_argument("--task", choices=("auto", "classification", "regression"), default="auto")
    p.add_argument("--val", metavar="FILE", help="validation data (same format and target as DATA)")
    p.add_argument("--val-split", type=split_fraction, default=0.2,
                   help="fraction of DATA held out for validation when --val is not given (0: none)")
    p.add_argument("--device", type=device_name, help="cpu, cuda or cuda:N (default: cuda when available)")
    p.add_argument("--dtype", choices=("float32", "float64"), default=None)
    p.add_argument("--memory-budget", type=memory_size, help="bytes for temporaries, e.g. 512MB")
    p.add_argument("--seed", type=nonnegative_int, default=0)
    p.add_argument("--out", metavar="MODEL", default="kops-model.safetensors", help="the model file to write")
    p.add_argument("--checkpoint", metavar="DIR", help="write checkpoints of the fit to DIR")
    p.add_argument("--checkpoint-every", type=checkpoint_interval, metavar="N|Ns",
                   help="every N batches or N seconds (e.g. 100 or 30s); default: 60s")
    p.add_argument("--resume", action="store_true", help="continue the fit from the checkpoint in --checkpoint")
    p.add_argument("--metrics", metavar="FILE.json", help="also write the per-epoch records and summary as JSON")
    _add_output_arguments(p)


def _add_output_arguments(p, plot=True):
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--json", action="store_true", help="machine-readable JSON lines on stdout")
    if plot:
        p.add_argument("--plot", type=png_path, metavar="FILE.png", help="plot the metrics (needs matplotlib)")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="kops", description="Kernel-matrix products and kernel models from the command line.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)

    p = sub.add_parser("fit", help="fit a kernel model on a data file and save it")
    _add_fit_arguments(p)

    p = sub.add_parser("predict", help="predict with a saved model")
    p.add_argument("model", metavar="MODEL")
    _add_data_arguments(p)
    p.add_argument("--out", metavar="FILE", help="write the predictions (.npy .csv .tsv); default: stdout")
    p.add_argument("--device", type=device_name)

    p = sub.add_parser("evaluate", help="accuracy (classification) or MSE and R^2 (regression) of a saved model")
    p.add_argument("model", metavar="MODEL")
    _add_data_arguments(p)
    p.add_argument("--device", type=device_name)
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")

    p = sub.add_parser("info", help="versions, build configuration and available backends")
    p.add_argument("--json", action="store_true", help="print the report as JSON")

    p = sub.add_parser("bench", help="time K(x, z) @ v on every available backend (JSON out)")
    p.add_argument("--n", type=positive_int, default=2000, help="n = m points")
    p.add_argument("--d", type=positive_int, nargs="+", default=[3, 16, 64, 256], help="feature counts")
    p.add_argument("--c", type=positive_int, default=10)
    p.add_argument("--kernel", choices=_kernel_names(), default="gaussian")
    p.add_argument("--repeats", type=positive_int, default=3)
    p.add_argument("--device", type=device_name)
    p.add_argument("--out", metavar="FILE.json", help="write the results as JSON (default: stdout)")
    p.add_argument("--plot", type=png_path, metavar="FILE.png", help="throughput against d (needs matplotlib)")
    p.add_argument("--quiet", action="store_true")

    p = sub.add_parser("demo", help="a short kernel-product demo on every available backend")
    p.add_argument("--n", type=positive_int, default=20000)
    p.add_argument("--d", type=positive_int, default=64)
    p.add_argument("--c", type=positive_int, default=10)

    p = sub.add_parser("train", help="the main job: EigenPro 4 on the bundled digits data through fit, save "
                       "and evaluate, compared with the exact solver")
    p.add_argument("--epochs", type=positive_int, default=5)
    p.add_argument("--centers", type=positive_int, default=1000)
    p.add_argument("--kernel", choices=_kernel_names(), default="laplacian")
    p.add_argument("--bandwidth", type=positive_float, default=10.0)
    p.add_argument("--batch-size", type=positive_int, default=256)
    p.add_argument("--device", type=device_name)
    p.add_argument("--seed", type=nonnegative_int, default=0)
    p.add_argument("--out-dir", metavar="DIR", default="kops-train",
                   help="where the model, the metrics JSON and the plot go")
    p.add_argument("--quiet", action="store_true")
    return parser

