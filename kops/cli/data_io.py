"""Reading data sets and writing predictions for the command line.

Formats (by suffix, or ``--format``):

* ``csv`` / ``tsv`` (``.csv``, ``.tsv``, ``.tab``, ``.txt``): one row per sample; a first
  row with a non-numeric cell is a header. The target is the column ``--target`` (a header
  name or an index, negative from the end) or a separate ``--y`` file. Feature columns
  must be numeric; the target may hold strings (class labels).
* ``npy``: the feature matrix; targets from ``--y`` or ``--target INDEX`` (a column).
* ``npz``: arrays ``X`` (or ``x``, ``data``) and ``y`` (or ``target``, ``labels``), or
  ``--target KEY``.
* ``libsvm`` (``.svm``, ``.libsvm``, ``.svmlight``): read by scikit-learn (the labels are
  part of the file), densified.
* ``parquet`` (``.parquet``, ``.pq``): read by pyarrow (``kops[parquet]`` extra), columns
  as in CSV.
* ``sklearn:NAME``: a data set bundled with scikit-learn (digits, iris, wine,
  breast_cancer, diabetes); pixel values of digits scaled to [0, 1].

Integer or string targets mean classification under ``--task auto``, floating targets
regression (:mod:`kops.solvers.base`).
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from .errors import UsageError, require

__all__ = ["FORMATS", "load_data", "write_predictions", "BUNDLED"]

FORMATS = ("csv", "tsv", "npy", "npz", "libsvm", "parquet")
_SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".txt": "csv", ".npy": "npy", ".npz": "npz",
             ".svm": "libsvm", ".libsvm": "libsvm", ".svmlight": "libsvm", ".parquet": "parquet",
             ".pq": "parquet"}
BUNDLED = ("digits", "iris", "wine", "breast_cancer", "diabetes")
_X_KEYS, _Y_KEYS = ("X", "x", "data", "features"), ("y", "Y", "target", "targets", "labels")


def data_format(path: str, fmt: str | None) -> str:
    """The format of ``path``: ``fmt`` when given, else from the suffix."""
    if fmt is not None:
        return fmt
    if path.startswith("sklearn:"):
        return "sklearn"
    suffix = Path(path).suffix.lower()
    if suffix not in _SUFFIXES:
        raise UsageError(f"cannot tell the format of {path!r} from its suffix {suffix!r}; pass --format "
                         f"({', '.join(FORMATS)})")
    return _SUFFIXES[suffix]


def _labels(column) -> np.ndarray:
    """A target column of strings as int, float or string labels."""
    values = np.asarray(column)
    if values.dtype.kind in "biuf":
        return values
    for kind in (np.int64, np.float64):
        try:
            return values.astype(kind)
        except ValueError:
            continue
    return values.astype(np.str_)


def _is_number(cell: str) -> bool:
    try:
        float(cell)
        return True
    except ValueError:
        return False


def _column_index(target: str, names: list[str] | None, width: int, path: str) -> int:
    if names is not None and target in names:
        return names.index(target)
    try:
        index = int(target)
    except ValueError:
        known = f"; its columns: {', '.join(names[:20])}" if names else " (it has no header row)"
        raise UsageError(f"{path!r} has no column {target!r}{known}", "--target") from None
    if not -width <= index < width:
        raise UsageError(f"column {index} is out of range for {path!r} with {width} columns", "--target")
    return index % width


def _split_columns(columns: list, names, target, path):
    """Features (n, d) float and the target column (or None) of a list of columns."""
    y = None
    if target is not None:
        j = _column_index(target, names, len(columns), path)
        y = _labels(columns[j])
        columns = columns[:j] + columns[j + 1 :]
    if not columns:
        raise UsageError(f"{path!r} has no feature columns besides the target")
    try:
        X = np.column_stack([np.asarray(c, dtype=np.float64) for c in columns])
    except ValueError as exc:
        raise UsageError(f"{path!r} has a non-numeric feature column ({exc}); only the target may hold "
                         "strings") from None
    return X, y


def _read_delimited(path: str, delimiter: str, target):
    with open(path, newline="") as f:
        rows = [r for r in csv.reader(f, delimiter=delimiter) if r and any(cell.strip() for cell in r)]
    if not rows:
        raise UsageError(f"{path!r} is empty")
    names = None
    if _has_header(rows):
        names, rows = [c.strip() for c in rows[0]], rows[1:]
    if not rows:
        raise UsageError(f"{path!r} has a header but no data rows")
    width = len(rows[0])
    for i, r in enumerate(rows):
        if len(r) != width:
            raise UsageError(f"{path!r}: row {i + 1 + (names is not None)} has {len(r)} fields, the first has {width}")
    columns = [[r[j].strip() for r in rows] for j in range(width)]
    return _split_columns(columns, names, target, path)


def _has_header(rows) -> bool:
    """A first row is a header when all its cells are text, or one is text above a number."""
    first = rows[0]
    if all(not _is_number(c) for c in first):
        return True
    if len(rows) < 2:
        return False
    return any(not _is_number(a) and _is_number(b) for a, b in zip(first, rows[1]))


def _read_array_y(y_path: str | None):
    if y_path is None:
        return None
    fmt = data_format(y_path, None)
    if fmt == "npy":
        y = np.load(y_path, allow_pickle=False)
    elif fmt in ("csv", "tsv"):
        with open(y_path, newline="") as f:
            cells = [r[0].strip() for r in csv.reader(f, delimiter="\t" if fmt == "tsv" else ",") if r]
        if cells and not _is_number(cells[0]) and len(cells) > 1 and _is_number(cells[1]):
            cells = cells[1:]  # a header
        y = _labels(cells)
    else:
        raise UsageError(f"a targets file must be .npy, .csv or .tsv, got {y_path!r}", "--y")
    return y


def _bundled(name: str):
    datasets = require("sklearn.datasets", f"the bundled data set sklearn:{name}")
    if name not in BUNDLED:
        raise UsageError(f"unknown bundled data set sklearn:{name}; known: "
                         + ", ".join(f"sklearn:{b}" for b in BUNDLED))
    X, y = getattr(datasets, f"load_{name}")(return_X_y=True)
    X = X / 16.0 if name == "digits" else X
    return X.astype(np.float32), y


def load_data(path: str, *, target=None, y_path=None, fmt=None, n_features=None, need_y=True):
    """Features and targets of a data file.

    Parameters
    ----------
    path : str
        A file, or ``sklearn:NAME`` for a bundled data set.
    target : str, optional
        The target column (name or index) or, for .npz, the key of the targets.
    y_path : str, optional
        A separate targets file (.npy, .csv, .tsv).
    fmt : str, optional
        One of :data:`FORMATS`; default from the suffix.
    n_features : int, optional
        For LIBSVM files: the model's feature count (files may omit trailing features).
    need_y : bool
        Raise UsageError when no targets are found.

    Returns
    -------
    X : ndarray (n, d), float
    y : ndarray (n,) or (n, c), or None
    """
    fmt = data_format(path, fmt)
    if target is not None and y_path is not None:
        raise UsageError("pass either --target or --y, not both", "--y")
    if fmt == "sklearn":
        X, y = _bundled(path.split(":", 1)[1])
    else:
        if not Path(path).is_file():
            raise UsageError(f"no such file: {path!r}", "DATA")
        X, y = _read_file(path, fmt, target, n_features)
    if y_path is not None:
        if not Path(y_path).is_file():
            raise UsageError(f"no such file: {y_path!r}", "--y")
        y = _read_array_y(y_path)
    X = np.asarray(X)
    if X.ndim != 2:
        raise UsageError(f"{path!r} holds an array of shape {X.shape}; the features must be 2-D (n, d)")
    if X.dtype.kind not in "biuf":
        raise UsageError(f"{path!r}: the features must be numeric, got dtype {X.dtype}")
    if y is not None and len(y) != X.shape[0]:
        raise UsageError(f"the targets have {len(y)} rows but {path!r} has {X.shape[0]} samples",
                         "--y" if y_path else "--target")
    if need_y and y is None:
        raise UsageError(f"no targets for {path!r}: pass --target COLUMN (or the .npz key) or --y FILE")
    return X, y


def _read_file(path, fmt, target, n_features):
    if fmt in ("csv", "tsv"):
        return _read_delimited(path, "\t" if fmt == "tsv" else ",", target)
    if fmt == "npy":
        try:
            X = np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise UsageError(f"cannot read {path!r} as .npy: {exc}") from None
        if target is not None:
            X2 = np.asarray(X)
            if X2.ndim != 2:
                raise UsageError(f"{path!r} is not 2-D, so it has no target column", "--target")
            return _split_columns([X2[:, j] for j in range(X2.shape[1])], None, target, path)
        return X, None
    if fmt == "npz":
        try:
            arrays = np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise UsageError(f"cannot read {path!r} as .npz: {exc}") from None
        keys = list(arrays.keys())
        x_key = next((k for k in _X_KEYS if k in keys), None)
        if x_key is None:
            raise UsageError(f"{path!r} has no feature array (keys {keys}; expected one of {', '.join(_X_KEYS)})")
        if target is not None and target not in keys:
            raise UsageError(f"{path!r} has no array {target!r} (keys {keys})", "--target")
        y_key = target if target is not None else next((k for k in _Y_KEYS if k in keys), None)
        return arrays[x_key], (None if y_key is None else arrays[y_key])
    if fmt == "libsvm":
        datasets = require("sklearn.datasets", "reading LIBSVM files")
        try:
            X, y = datasets.load_svmlight_file(path, n_features=n_features)
        except ValueError as exc:
            raise UsageError(f"cannot read {path!r} as LIBSVM: {exc}") from None
        y = y.astype(np.int64) if np.all(y == np.round(y)) else y
        return X.toarray(), y
    if fmt == "parquet":
        pq = require("pyarrow.parquet", "reading Parquet files")
        table = pq.read_table(path)
        names = list(table.column_names)
        return _split_columns([table.column(k).to_numpy(zero_copy_only=False) for k in names], names, target, path)
    raise UsageError(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}", "--format")


def write_predictions(path: str, predictions) -> None:
    """Predictions (n,) or (n, c) to ``.npy`` or a CSV / TSV file (one row per sample)."""
    pred = np.asarray(predictions)
    suffix = Path(path).suffix.lower()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".npy":
        np.save(path, pred)
        return
    if suffix not in (".csv", ".tsv", ".txt"):
        raise UsageError(f"predictions are written as .npy, .csv or .tsv, got {path!r}", "--out")
    rows = pred.reshape(pred.shape[0], -1)
    with open(path, "w", newline="") as f:
        csv.writer(f, delimiter="\t" if suffix == ".tsv" else ",").writerows(rows.tolist())
