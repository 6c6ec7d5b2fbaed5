"""EigenPro 4 side by side with an external reference implementation: time to accuracy, memory.

Both fit the same data with the same centers (p of them), Laplacian kernel, bandwidth 20,
float32, on the CPU. Each fit runs in its own subprocess (peak memory = the child's
``ru_maxrss``, Python + torch baseline included, reported separately); the two alternate in
one run (reference, kops, reference, kops, ...) so that a shared machine's load hits both
alike, and the load average is recorded before each fit. Per epoch: time since the fit
started (set-up included, test-metric evaluation excluded) and test accuracy.

Data sets:

* ``digits784``: scikit-learn's bundled 8x8 digits, upsampled to 28 x 28 (784 pixels,
  bilinear) and augmented with random shifts of up to 3 pixels and pixel noise (0.05) to
  n training and 2000 test images (the test images come from a held-out 20% of the
  originals), pixel values in [0, 1].
* ``synthetic``: a 10-class Gaussian mixture (as in bench_solvers.py), d = 32.

The reference is NOT part of this repository: pass the path of a checkout of its package
(the directory holding ``eigenpro/``) with ``--reference``; without it only kops runs. Its
``solver.fit`` runs unchanged with its own defaults (s = 3000, q = 150 for both
preconditioners, T = (coeff - 1) p // m*, coeff = 2); its progress-bar and table modules
are replaced by no-op stand-ins when they are not installed.

    python bench/bench_ep4_reference.py --reference /path/to/EigenPro --data digits784 \\
        --n 30000 --centers 10000 --epochs 2

Writes bench/results/ep4_vs_reference_<UTC timestamp>.json.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

BANDWIDTH = 20.0

STUBS = {
    "tqdm.py": "def tqdm(iterable=None, *args, **kwargs):\n    return iterable\n",
    "tabulate.py": "def tabulate(*args, **kwargs):\n    return ''\n",
    "termcolor.py": "def colored(text, *args, **kwargs):\n    return str(text)\n",
}


def make_digits784(n, n_test=2000, seed=0):
    import numpy as np
    import torch
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(X))
    cut = int(0.8 * len(X))
    img = torch.from_numpy(X / 16.0).float().reshape(-1, 1, 8, 8)
    # 8x8 -> 20x20 then padded to 28x28: the room the shifts move in.
    img = torch.nn.functional.interpolate(img, size=(20, 20), mode="bilinear", align_corners=False)
    img = torch.nn.functional.pad(img, (4, 4, 4, 4))

    def draw(pool, count):
        idx = rng.choice(pool, size=count)
        dx, dy = rng.integers(-3, 4, size=count), rng.integers(-3, 4, size=count)
        out = np.empty((count, 784), dtype=np.float32)
        for k in range(count):
            im = torch.roll(img[idx[k], 0], shifts=(int(dy[k]), int(dx[k])), dims=(0, 1))
            out[k] = im.reshape(-1).numpy()
        out += rng.normal(scale=0.05, size=out.shape).astype(np.float32)
        return np.clip(out, 0.0, 1.0), y[idx]

    Xtr, ytr = draw(perm[:cut], n)
    Xte, yte = draw(perm[cut:], n_test)
    return Xtr, ytr, Xte, yte


def make_synthetic(n, n_test=2000, d=32, classes=10, seed=0):
    import numpy as np

    rng = np.random.default_rng(seed)
    mu = rng.normal(size=(classes, d)) * (5.0 / np.sqrt(2 * d))
    y = rng.integers(0, classes, size=n + n_test)
    X = (mu[y] + rng.normal(size=(n + n_test, d))).astype(np.float32)
    return X[:n], y[:n], X[n:], y[n:]


def _load(path):
    import numpy as np

    f = np.load(path)
    return f["Xtr"], f["ytr"], f["Xte"], f["yte"], f["Z"]


def child_kops(path, epochs, seed):
    import numpy as np
    import torch

    import kops

    Xtr, ytr, Xte, yte, Z = _load(path)
    records = []
    t0 = time.perf_counter()
    model = kops.EigenPro4("laplacian", BANDWIDTH, centers=Z, epochs=epochs, random_state=seed, device="cpu")
    model.fit(Xtr, ytr, Xte, yte)
    total = time.perf_counter() - t0
    for r in model.history_:
        records.append({"epoch": r["epoch"], "seconds": r["elapsed"], "epoch_seconds": r["epoch_seconds"],
                        "test_accuracy": r["val_accuracy"]})
    info = {"batch_size": model.batch_size_, "projection_interval": model.projection_interval_,
            "block_reuse": model.block_reuse_, "step_size": model.step_size_,
            "projection_steps": model.projector_.steps_[:20], "fit_seconds_with_metrics": total,
            "threads": torch.get_num_threads()}
    return records, info


def child_reference(path, epochs, seed, reference):
    import numpy as np
    import torch

    stubs = tempfile.mkdtemp()
    for name, text in STUBS.items():
        try:
            __import__(name[:-3])
        except ImportError:
            Path(stubs, name).write_text(text)
    sys.path[:0] = [reference, stubs]
    import eigenpro.kernels as kernels
    import eigenpro.models.sharded_kernel_machine as skm
    import eigenpro.solver as solver
    import eigenpro.utils.device as dev
    import eigenpro.utils.metrics as metrics

    np.random.seed(seed)
    torch.manual_seed(seed)
    Xtr, ytr, Xte, yte, Z = _load(path)
    c = int(max(ytr.max(), yte.max())) + 1
    Xtr_t, Xte_t, Z_t = torch.from_numpy(Xtr), torch.from_numpy(Xte), torch.from_numpy(Z)
    Ytr = torch.nn.functional.one_hot(torch.from_numpy(ytr).long(), c).float()
    Yte = torch.nn.functional.one_hot(torch.from_numpy(yte).long(), c).float()

    def kernel_fn(x, z):
        return kernels.laplacian(x, z, bandwidth=BANDWIDTH)

    records, clock = [], {"eval": 0.0}
    real = metrics.get_performance

    def timed(model, X, Y, *args, **kwargs):  # called once per epoch by the reference's fit
        t = time.perf_counter()
        out = real(model, X, Y, *args, **kwargs)
        elapsed = t - clock["start"] - clock["eval"]
        clock["eval"] += time.perf_counter() - t
        prev = records[-1]["seconds"] if records else 0.0
        records.append({"epoch": len(records) + 1, "seconds": elapsed, "epoch_seconds": elapsed - prev,
                        "test_accuracy": float(out[1])})
        return out

    solver.metrics.get_performance = timed
    device = dev.Device.create(use_gpu_if_available=False)
    clock["start"] = time.perf_counter()
    model = skm.create_sharded_kernel_machine(Z_t, c, kernel_fn, device, dtype=torch.float32, tmp_centers_coeff=2)
    solver.fit(model, Xtr_t, Ytr, Xte_t, Yte, device, dtype=torch.float32, kernel=kernel_fn, epochs=epochs,
               accumulated_gradients=True)
    return records, {"threads": torch.get_num_threads()}


def run_child(which, path, epochs, seed, reference):
    cmd = [sys.executable, __file__, "--child", which, "--data-file", path, "--epochs", str(epochs),
           "--seed", str(seed)]
    if reference:
        cmd += ["--reference", reference]
    load = os.getloadavg()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=7200)
    if out.returncode != 0:
        return {"solver": which, "error": out.stderr[-2000:], "load_average_before": load}
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result.update(solver=which, load_average_before=load, load_average_after=os.getloadavg())
    return result


def time_to(records, target):
    for r in records:
        if r["test_accuracy"] >= target:
            return r["seconds"]
    return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reference", default=None, help="path of a checkout of the reference package")
    ap.add_argument("--data", choices=("digits784", "synthetic"), default="digits784")
    ap.add_argument("--n", type=int, default=30000)
    ap.add_argument("--centers", type=int, default=10000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1, help="alternating (reference, kops) pairs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    ap.add_argument("--child", choices=("kops", "reference", "baseline"), default=None, help=argparse.SUPPRESS)
    ap.add_argument("--data-file", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.child:
        if args.child == "baseline":
            import torch  # noqa: F401

            import kops  # noqa: F401

            records, info = [], {}
        elif args.child == "kops":
            records, info = child_kops(args.data_file, args.epochs, args.seed)
        else:
            records, info = child_reference(args.data_file, args.epochs, args.seed, args.reference)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        print(json.dumps({"records": records, "info": info, "peak_rss_bytes": peak}))
        return 0

    import numpy as np

    from harness import machine_info

    if args.reference and not Path(args.reference, "eigenpro").is_dir():
        print(f"--reference {args.reference} holds no eigenpro/ package; running kops only")
        args.reference = None
    make = make_digits784 if args.data == "digits784" else make_synthetic
    Xtr, ytr, Xte, yte = make(args.n, seed=args.seed)
    rng = np.random.default_rng(args.seed + 1)
    Z = Xtr[rng.permutation(len(Xtr))[: args.centers]]
    tmp = tempfile.NamedTemporaryFile(suffix=".npz", delete=False)
    np.savez(tmp.name, Xtr=Xtr, ytr=ytr, Xte=Xte, yte=yte, Z=Z)
    runs = [run_child("baseline", tmp.name, 0, args.seed, None)]
    for _ in range(args.repeats):
        for which in (("reference", "kops") if args.reference else ("kops",)):
            r = run_child(which, tmp.name, args.epochs, args.seed, args.reference)
            runs.append(r)
            last = r.get("records", [{}])[-1:] or [{}]
            print(f"{which}: {json.dumps(last[0])}  peak {r.get('peak_rss_bytes', 0) / 2**20:.0f} MiB", flush=True)
    os.unlink(tmp.name)

    summary = {}
    ok = [r for r in runs if r["solver"] != "baseline" and "records" in r]
    ref = [r for r in ok if r["solver"] == "reference"]
    kop = [r for r in ok if r["solver"] == "kops"]
    if ref and kop:
        target = min(max(x["test_accuracy"] for x in r["records"]) for r in ref)
        t_ref = [time_to(r["records"], target) for r in ref]
        t_kops = [time_to(r["records"], target) for r in kop]
        summary = {"target_accuracy": target, "reference_time_to_target": t_ref, "kops_time_to_target": t_kops,
                   "ratio_kops_over_reference": [(k / r) if k and r else None for k, r in zip(t_kops, t_ref)],
                   "final_accuracy": {"reference": [r["records"][-1]["test_accuracy"] for r in ref],
                                      "kops": [r["records"][-1]["test_accuracy"] for r in kop]},
                   "epoch_seconds": {"reference": [[x["epoch_seconds"] for x in r["records"]] for r in ref],
                                     "kops": [[x["epoch_seconds"] for x in r["records"]] for r in kop]},
                   "peak_rss_bytes": {"reference": [r["peak_rss_bytes"] for r in ref],
                                      "kops": [r["peak_rss_bytes"] for r in kop]}}
        print(json.dumps(summary, indent=1))
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = Path(args.out) if args.out else HERE / "results" / f"ep4_vs_reference_{stamp}.json"
    config = {"data": args.data, "n_train": args.n, "n_test": len(Xte), "d": Xtr.shape[1], "centers": args.centers,
              "epochs": args.epochs, "kernel": "laplacian", "bandwidth": BANDWIDTH, "dtype": "float32",
              "seed": args.seed, "reference": "github.com/EigenPro/EigenPro (solver.fit)" if args.reference else None}
    out.write_text(json.dumps({"machine": machine_info(), "config": config, "runs": runs, "summary": summary},
                              indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
