"""GPyTorch ExactGP training steps: kops kernels against GPyTorch's own, side by side.

One training step is ``loss = -mll(model(X), y); loss.backward()`` under
``gpytorch.settings.max_cholesky_size(0)`` (CG and Lanczos quadrature, GPyTorch's other
settings at their defaults), for an ARD RBF kernel with outputscale on n points of d
features (float32 by default, GPyTorch's default dtype):

* ``gpytorch``: ``ScaleKernel(RBFKernel(ard_num_dims=d))``: GPyTorch forms the n x n K;
* ``kops``: ``KopsRBFKernel(ard_num_dims=d)``: every product is a fused kops product;
* ``kops+eigenpro``: the same with ``EigenProPreconditioner(q)`` in GPyTorch's CG.

Each (variant, n) runs in its own process, so the peak resident memory it reports (ru_maxrss)
is that case's. Rows: median / min seconds per step (after one warm-up step), the peak RSS,
the loss, and the speed-up of each variant over gpytorch at the same n.

    python bench/bench_gpytorch.py --n 1000 4000 10000 --json bench/results/
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import format_table, machine_info, time_call, write_json  # noqa: E402

VARIANTS = ("gpytorch", "kops", "kops+eigenpro")


def _data(n, d, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.sin(X @ torch.randn(d, generator=g, dtype=torch.float64) / d ** 0.5)
    y = y + 0.1 * torch.randn(n, generator=g, dtype=torch.float64)
    return X.to(dtype), y.to(dtype)


def run_case(variant, n, d, dtype, repeats, components):
    """One (variant, n) in this process; returns its row."""
    import gpytorch

    from kops.integrations.gpytorch import EigenProPreconditioner, KopsRBFKernel

    X, y = _data(n, d, dtype)
    if variant == "gpytorch":
        covar = gpytorch.kernels.ScaleKernel(gpytorch.kernels.RBFKernel(ard_num_dims=d))
    else:
        pre = EigenProPreconditioner(components) if variant == "kops+eigenpro" else None
        covar = KopsRBFKernel(ard_num_dims=d, preconditioner=pre)

    class GP(gpytorch.models.ExactGP):
        def forward(self, x):
            return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))

    likelihood = gpytorch.likelihoods.GaussianLikelihood()
    model = GP(X, y, likelihood)
    model.mean_module, model.covar_module = gpytorch.means.ConstantMean(), covar
    model = model.to(dtype)
    model.covar_module.outputscale = 1.0
    base = getattr(model.covar_module, "base_kernel", model.covar_module)
    base.lengthscale = 2.0
    likelihood.noise = 0.05
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(likelihood, model)
    model.train()
    losses = []

    def step():
        torch.manual_seed(0)
        model.zero_grad()
        with gpytorch.settings.max_cholesky_size(0):
            loss = -mll(model(X), y)
            loss.backward()
        losses.append(float(loss.detach()))

    timing = time_call(step, warmup=1, repeats=repeats)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"variant": variant, "n": n, "d": d, "dtype": str(dtype).replace("torch.", ""),
            "median_s": timing["median_s"], "min_s": timing["min_s"], "times_s": timing["times_s"],
            "peak_rss_mb": peak / 1e6, "loss": losses[-1], "load_avg": list(__import__("os").getloadavg())}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, nargs="+", default=[1000, 4000, 10000])
    parser.add_argument("--d", type=int, default=8)
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--components", type=int, default=50, help="q of the EigenPro preconditioner")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--json", default=None, help="file or directory for the JSON result")
    parser.add_argument("--case", nargs=2, metavar=("VARIANT", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    dtype = getattr(torch, args.dtype)
    if args.case:  # child process: one case, its row as JSON on stdout
        print(json.dumps(run_case(args.case[0], int(args.case[1]), args.d, dtype, args.repeats, args.components)))
        return
    rows = []
    for n in args.n:
        for variant in args.variants:
            cmd = [sys.executable, __file__, "--case", variant, str(n), "--d", str(args.d), "--dtype", args.dtype,
                   "--repeats", str(args.repeats), "--components", str(args.components)]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                rows.append({"variant": variant, "n": n, "error": done.stderr.strip().splitlines()[-1:]})
                continue
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    for row in rows:
        ref = next((r for r in rows if r["n"] == row["n"] and r["variant"] == "gpytorch" and "median_s" in r), None)
        if ref is not None and "median_s" in row:
            row["speedup_vs_gpytorch"] = ref["median_s"] / row["median_s"]
    ok = [r for r in rows if "median_s" in r]
    print(format_table(ok, [("variant", "variant", ""), ("n", "n", "d"), ("median_s", "median s", ".3f"),
                            ("min_s", "min s", ".3f"), ("peak_rss_mb", "peak MB", ".0f"), ("loss", "loss", ".4f"),
                            ("speedup_vs_gpytorch", "vs gpytorch", ".2f")]))
    for r in rows:
        if "error" in r:
            print(f"{r['variant']} n={r['n']}: failed: {r['error']}")
    if args.json:
        config = {"d": args.d, "dtype": args.dtype, "repeats": args.repeats, "components": args.components,
                  "settings": "max_cholesky_size(0), GPyTorch defaults otherwise", "lengthscale": 2.0,
                  "outputscale": 1.0, "noise": 0.05}
        path = write_json({"machine": machine_info(), "benchmark": "gpytorch_exactgp", "config": config,
                           "rows": rows}, args.json)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
