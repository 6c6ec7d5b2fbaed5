"""The command line (kops.cli): data formats, fit / predict / evaluate, the bad-argument
table, --json records, plots, missing optional dependencies and the main job."""
import csv
import json
import struct
import subprocess
import sys

import numpy as np
import pytest

import kops
from kops.cli import main

FIT = ["--solver", "eigenpro4", "--kernel", "gaussian", "--bandwidth", "2", "--centers", "30", "--epochs", "2",
       "--seed", "0", "--device", "cpu"]


def _data(seed=0, n=90, d=4):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(np.float32)
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int)
    return X, y


def _write_csv(path, rows, delimiter=","):
    with open(path, "w", newline="") as f:
        csv.writer(f, delimiter=delimiter).writerows(rows)


def write_format(fmt, tmp_path, X, y):
    """A data file of ``fmt`` and the target arguments that read it."""
    if fmt == "csv":  # header, string labels in the middle column
        path = tmp_path / "d.csv"
        labels = np.where(y == 1, "yes", "no")
        _write_csv(path, [["a", "b", "label", "c", "e"]]
                   + [[*x[:2], lab, *x[2:]] for x, lab in zip(X.tolist(), labels)])
        return path, ["--target", "label"], labels
    if fmt == "tsv":  # no header, target last
        path = tmp_path / "d.tsv"
        _write_csv(path, [[*x, t] for x, t in zip(X.tolist(), y.tolist())], delimiter="\t")
        return path, ["--target", "-1"], y
    if fmt == "npy":
        path, ypath = tmp_path / "d.npy", tmp_path / "y.npy"
        np.save(path, X)
        np.save(ypath, y)
        return path, ["--y", str(ypath)], y
    if fmt == "npz":
        path = tmp_path / "d.npz"
        np.savez(path, X=X, labels=y)
        return path, [], y
    if fmt == "libsvm":
        from sklearn.datasets import dump_svmlight_file

        path = tmp_path / "d.svm"
        dump_svmlight_file(X, y, str(path))
        return path, [], y
    if fmt == "parquet":
        pa = pytest.importorskip("pyarrow")
        import pyarrow.parquet as pq

        path = tmp_path / "d.parquet"
        columns = {f"f{j}": X[:, j] for j in range(X.shape[1])}
        pq.write_table(pa.table({**columns, "target": y}), path)
        return path, ["--target", "target"], y
    raise AssertionError(fmt)


@pytest.mark.parametrize("fmt", ["csv", "tsv", "npy", "npz", "libsvm", "parquet"])
def test_each_format_fits_predicts_and_evaluates(fmt, tmp_path, capsys):
    X, y = _data()
    path, target, labels = write_format(fmt, tmp_path, X, y)
    model = tmp_path / "m.safetensors"
    assert main(["fit", str(path), *target, *FIT, "--out", str(model), "--quiet"]) == 0
    loaded = kops.load(model)
    assert loaded.n_features_in_ == 4 and set(loaded.classes_.tolist()) == set(np.unique(labels).tolist())
    capsys.readouterr()
    assert main(["evaluate", str(model), str(path), *target, "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["event"] == "evaluate" and record["samples"] == 90
    assert record["accuracy"] == pytest.approx(float(np.mean(loaded.predict(X) == labels)))
    out = tmp_path / "pred.npy"
    drop = target if fmt in ("csv", "tsv", "parquet") else []
    assert main(["predict", str(model), str(path), *drop, "--out", str(out)]) == 0
    np.testing.assert_array_equal(np.load(out), loaded.predict(X))


def test_regression_csv_and_predictions_on_stdout(tmp_path, capsys):
    X, _ = _data(1)
    y = np.sin(X[:, 0]) + X[:, 1]
    path = tmp_path / "r.csv"
    _write_csv(path, [[*x, t] for x, t in zip(X.tolist(), y.tolist())])
    model = tmp_path / "r.safetensors"
    assert main(["fit", str(path), "--target", "4", *FIT, "--val-split", "0.25", "--out", str(model),
                 "--quiet"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(model), str(path), "--target", "4"]) == 0
    line = capsys.readouterr().out
    assert "mse" in line and "r2" in line
    assert main(["predict", str(model), str(path), "--target", "4"]) == 0
    printed = np.array([float(v) for v in capsys.readouterr().out.split()])
    np.testing.assert_allclose(printed, kops.load(model).predict(X), rtol=1e-6)


def test_json_records_and_plot(tmp_path, capsys):
    model, plot, metrics = tmp_path / "m.safetensors", tmp_path / "h.png", tmp_path / "h.json"
    assert main(["fit", "sklearn:iris", *FIT, "--epochs", "3", "--json", "--plot", str(plot), "--metrics",
                 str(metrics), "--out", str(model)]) == 0
    captured = capsys.readouterr()
    records = [json.loads(line) for line in captured.out.strip().splitlines()]  # stdout is pure JSON
    epochs, summary = records[:-1], records[-1]
    assert [r["epoch"] for r in epochs] == [1, 2, 3]
    for r in epochs:
        assert r["event"] == "epoch"
        for key in ("seconds", "epoch_seconds", "elapsed", "train_mse", "objective", "train_accuracy",
                    "val_accuracy"):
            assert isinstance(r[key], float), key
    assert summary["event"] == "summary" and summary["estimator"] == "EigenPro4" and summary["epochs"] == 3
    assert summary["model"] == str(model) and 0 <= summary["val_accuracy"] <= 1
    assert json.loads(metrics.read_text())["summary"] == summary
    raw = plot.read_bytes()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", raw[16:24]) == (1000, 400)


def _one_line_error(capsys, argv):
    status = main(argv)
    err = capsys.readouterr().err
    return status, err


BAD_ARGUMENTS = [
    (["fit", "sklearn:digits", "--kernel", "poly"], "argument --kernel: invalid choice: 'poly'"),
    (["fit", "sklearn:digits", "--device", "cuda"], "argument --device: 'cuda' is not available"),
    (["fit", "sklearn:digits", "--device", "tpu"], "argument --device: unknown device 'tpu'"),
    (["demo", "--n", "-5"], "argument --n: must be a positive integer, got '-5'"),
    (["fit", "sklearn:digits", "--centers", "5000"], "argument --centers: 5000 centers but only 1438 training"),
    (["fit", "sklearn:digits", "--solver", "eigenpro2", "--centers", "50"], "argument --centers: eigenpro2 uses"),
    (["fit", "sklearn:digits", "--epochs", "-1"], "argument --epochs: must be an integer >= 0"),
    (["fit", "sklearn:digits", "--bandwidth", "0"], "argument --bandwidth: must be a positive number"),
    (["fit", "sklearn:digits", "--bandwidth", "nan"], "argument --bandwidth: must be a finite number"),
    (["fit", "sklearn:digits", "--ridge", "-1"], "argument --ridge: must be a number >= 0"),
    (["fit", "sklearn:digits", "--val-split", "1.5"], "argument --val-split: must be a fraction in [0, 1)"),
    (["fit", "sklearn:digits", "--memory-budget", "lots"], "argument --memory-budget"),
    (["fit", "sklearn:digits", "--dtype", "float16"], "argument --dtype: invalid choice"),
    (["fit", "sklearn:digits", "--plot", "x.jpg"], "argument --plot: must be a .png file"),
    (["fit", "sklearn:digits", "--checkpoint-every", "0"], "argument --checkpoint-every: must be positive"),
    (["fit", "sklearn:digits", "--checkpoint-every", "5"], "argument --checkpoint-every: --checkpoint-every needs"),
    (["fit", "sklearn:digits", "--resume"], "argument --resume: --resume needs --checkpoint"),
    (["fit", "sklearn:digits", "--solver", "exact", "--checkpoint", "c"], "argument --checkpoint: the exact solver"),
    (["fit", "sklearn:nope"], "unknown bundled data set sklearn:nope"),
    (["fit", "missing.csv", "--target", "y"], "argument DATA: no such file: 'missing.csv'"),
    (["fit", "data.xyz"], "cannot tell the format of 'data.xyz'"),
    (["fit", "sklearn:digits", "--solver", "svm"], "argument --solver: invalid choice: 'svm'"),
    (["evaluate", "missing.safetensors", "sklearn:digits"], "argument MODEL: model file 'missing.safetensors'"),
    (["bench", "--d", "0"], "argument --d: must be a positive integer"),
    (["frobnicate"], "argument COMMAND: invalid choice: 'frobnicate'"),
]


@pytest.mark.parametrize("argv,message", BAD_ARGUMENTS, ids=[" ".join(a) for a, _ in BAD_ARGUMENTS])
def test_bad_arguments_give_one_line_naming_them(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    status, err = _one_line_error(capsys, argv)
    assert status == 2
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("kops") and message in err, err


def test_data_errors_name_the_argument(tmp_path, capsys):
    X, y = _data()
    path = tmp_path / "d.csv"
    _write_csv(path, [["a", "b", "c", "d", "y"]] + [[*x, t] for x, t in zip(X.tolist(), y.tolist())])
    status, err = _one_line_error(capsys, ["fit", str(path), "--target", "label"])
    assert status == 2 and "argument --target: " in err and "has no column 'label'" in err and "a, b, c" in err
    status, err = _one_line_error(capsys, ["fit", str(path)])
    assert status == 2 and "no targets" in err
    model = tmp_path / "m.safetensors"
    assert main(["fit", str(path), "--target", "y", *FIT, "--out", str(model), "--quiet"]) == 0
    status, err = _one_line_error(capsys, ["predict", str(model), str(path)])  # the target column left in
    assert status == 2 and "5 features, the model 4" in err
    ckpt = tmp_path / "ckpt"
    assert main(["fit", str(path), "--target", "y", *FIT, "--out", str(model), "--quiet", "--checkpoint",
                 str(ckpt)]) == 0
    status, err = _one_line_error(capsys, ["fit", str(path), "--target", "y", *FIT, "--quiet", "--checkpoint",
                                           str(ckpt)])
    assert status == 2 and "already holds a checkpoint" in err
    status, err = _one_line_error(capsys, ["fit", str(path), "--target", "y", *FIT, "--seed", "1", "--quiet",
                                           "--checkpoint", str(ckpt), "--resume"])
    assert status == 2 and "belongs to another fit" in err and "random_state" in err
    (ckpt / "state.safetensors").write_bytes(b"garbage")
    status, err = _one_line_error(capsys, ["fit", str(path), "--target", "y", *FIT, "--quiet", "--checkpoint",
                                           str(ckpt), "--resume"])
    assert status == 2 and "not a kops checkpoint" in err and err.count("\n") == 1


def test_missing_optional_dependency_names_the_extra(capsys, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    status, err = _one_line_error(capsys, ["fit", "sklearn:iris", "--plot", str(tmp_path / "p.png")])
    assert status == 2 and "matplotlib" in err and "kops[plot]" in err
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    (tmp_path / "d.parquet").write_bytes(b"PAR1")
    status, err = _one_line_error(capsys, ["fit", str(tmp_path / "d.parquet"), "--target", "y"])
    assert status == 2 and "kops[parquet]" in err


def test_info_json_into_a_closed_pipe_exits_quietly():
    proc = subprocess.Popen([sys.executable, "-m", "kops", "info", "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before kops writes (``| head`` that already exited)
    err = proc.stderr.read().decode()
    assert proc.wait() == 141 and "Traceback" not in err and "BrokenPipe" not in err, err


def test_info_text_and_json(capsys):
    assert main(["info", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["version"] == kops.__version__ and "torch" in report["backends"]


def test_bench_json_and_plot(tmp_path, capsys):
    out, plot = tmp_path / "b.json", tmp_path / "b.png"
    assert main(["bench", "--n", "300", "--d", "3", "17", "--repeats", "1", "--out", str(out), "--plot",
                 str(plot), "--quiet"]) == 0
    result = json.loads(out.read_text())
    assert {r["d"] for r in result["rows"]} == {3, 17} and "torch" in {r["backend"] for r in result["rows"]}
    for r in result["rows"]:
        assert r["seconds"] > 0 and r["pairs_per_second"] == pytest.approx(300 * 300 / r["seconds"])
        assert r["floor_pairs_per_second"] > 0
    assert result["machine"]["kops"] == kops.__version__
    assert struct.unpack(">II", plot.read_bytes()[16:24]) == (1000, 400)


def test_main_job_fits_saves_evaluates_and_says_where(tmp_path, capsys):
    assert main(["train", "--epochs", "1", "--centers", "200", "--out-dir", str(tmp_path / "job"), "--quiet"]) == 0
    out = capsys.readouterr().out
    for where in ("digits-eigenpro4.safetensors", "history.json", "history.png"):
        assert where in out and (tmp_path / "job" / where).is_file()
    assert "held-out accuracy" in out and "exact solver" in out
    record = json.loads((tmp_path / "job" / "history.json").read_text())
    assert record["history"][0]["val_accuracy"] > 0.9


def test_progress_bars_on_a_terminal_and_plain_lines_otherwise(capsys, monkeypatch, tmp_path):
    pytest.importorskip("tqdm")
    args = ["fit", "sklearn:iris", *FIT, "--out", str(tmp_path / "m.safetensors")]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "epoch 1/2  train_accuracy" in err and "epoch 2/2" in err  # stderr is not a terminal here
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "epochs: 100%" in err and "2/2" in err and "loss=" in err and "epoch 1/2  train" not in err
    assert main([*args, "--quiet"]) == 0
    assert capsys.readouterr().err == ""
