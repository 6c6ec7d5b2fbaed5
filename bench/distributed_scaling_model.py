"""A scaling model of sharded EigenPro 4: per-batch compute against communication (a model,
not a measurement).

Per batch of m points on P GPUs, with p centers sharded by rows (p / P each), d features,
c outputs, float32:

* compute: ``m (p / P) F`` flops at ``RATE`` flop/s, ``F = 2 d + 4 c + 20`` per kernel entry
  (the distance product, the forward and transposed value products, the kernel itself;
  the kernel block formed once per batch);
* communication: one all-reduce of m x c floats (the batch residual) and one of q x c (the
  correction, latency only), each ``2 ceil(log2 P) alpha + 2 (P - 1) / P * bytes / B``
  (latency alpha per hop, bus bandwidth B);
* the projection, every ``T = p / m`` batches (``projection_coeff = 2``), amortised per
  batch: ``STEPS`` iterative steps of ``(p / P) p F'`` flops (``F' = 2 d + 2 c + 20``); for
  p above 10,000 each step is an EigenPro 2 epoch over the centers in batches of m, i.e.
  ``p / m`` all-reduces of m x c (:func:`kops.distributed.steps.sharded_eigenpro2_epoch`).

* with the training data sharded too (``data_sharding="rows"``): one all-gather per batch of
  its m x (d + c) rows, ``ceil(log2 P) alpha + (P - 1) / P * bytes / B``
  (``data_allgather_ms``, ``batch_efficiency_sharded_data``; the other columns are the
  replicated-data fit's).

Efficiency is ``compute / (compute + communication)`` with no overlap, for the batch alone
and with the amortised projection: where it falls below one half, adding GPUs stops paying.
NVLink rows beyond 8 GPUs stand for an NVLink domain of that size (e.g. NVL72 racks). The constants below are assumptions about the
hardware, stated so that they can be changed; nothing here was run on a GPU.

    python bench/distributed_scaling_model.py            # markdown table on stdout
    python bench/distributed_scaling_model.py --json bench/results
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

#: assumed sustained float32 rate of one GPU on the kernel block (flop/s)
RATE = 50e12
#: interconnects: (bus bandwidth per GPU in bytes/s, latency per all-reduce hop in s)
LINKS = {"NVLink": (300e9, 5e-6), "InfiniBand": (50e9, 10e-6)}
#: iterative projection steps per projection (the default with K(Z, Z) not formed)
STEPS = 4
BYTES = 4


def allreduce_seconds(elements: float, P: int, bandwidth: float, latency: float) -> float:
    if P == 1:
        return 0.0
    return 2 * math.ceil(math.log2(P)) * latency + 2 * (P - 1) / P * elements * BYTES / bandwidth


def allgather_seconds(elements: float, P: int, bandwidth: float, latency: float) -> float:
    """All-gather of ``elements`` in all (each rank receiving the others' parts)."""
    if P == 1:
        return 0.0
    return math.ceil(math.log2(P)) * latency + (P - 1) / P * elements * BYTES / bandwidth


def model_row(p: float, P: int, link: str, *, m: int, d: int, c: int, q: int, s: int) -> dict:
    bandwidth, latency = LINKS[link]
    F, F_proj = 2 * d + 4 * c + 20, 2 * d + 2 * c + 20
    compute = m * (p / P) * F / RATE
    comm = allreduce_seconds(m * c, P, bandwidth, latency) + allreduce_seconds(q * c, P, bandwidth, latency)
    T = max(1.0, p / m)
    proj_compute = STEPS * (p / P) * p * F_proj / RATE / T
    proj_comm = STEPS * math.ceil(p / m) * allreduce_seconds(m * c, P, bandwidth, latency) / T
    total_compute, total_comm = compute + proj_compute, comm + proj_comm
    gather = allgather_seconds(m * (d + c), P, bandwidth, latency)
    return {"p": p, "gpus": P, "link": link, "batch_compute_ms": 1e3 * compute, "allreduce_ms": 1e3 * comm,
            "allreduce_bytes": (m + q) * c * BYTES, "projection_compute_ms": 1e3 * proj_compute,
            "projection_comm_ms": 1e3 * proj_comm, "batch_efficiency": compute / (compute + comm),
            "efficiency": total_compute / (total_compute + total_comm),
            "weights_mb_per_gpu": p / P * c * 3 * BYTES / 1e6, "data_allgather_ms": 1e3 * gather,
            "batch_efficiency_sharded_data": compute / (compute + comm + gather)}


def table(m=10_000, d=128, c=10, q=150, s=3000, ps=(1e6, 1e7, 1e8), gpus=(8, 32, 128, 512)):
    rows = []
    for p in ps:
        for P in gpus:
            for link in LINKS:
                rows.append(model_row(p, P, link, m=m, d=d, c=c, q=q, s=s))
    return rows


def markdown(rows) -> str:
    lines = ["| p | GPUs | link | batch compute (ms) | all-reduce (ms) | batch efficiency "
             "| projection per batch: compute, comm (ms) | overall efficiency |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['p']:.0e} | {r['gpus']} | {r['link']} | {r['batch_compute_ms']:.3g} | "
                     f"{r['allreduce_ms']:.3g} | {r['batch_efficiency']:.2f} | {r['projection_compute_ms']:.3g}, "
                     f"{r['projection_comm_ms']:.3g} | {r['efficiency']:.2f} |")
    return "\n".join(lines)


def pivot(rows) -> str:
    """One line per (p, GPUs): compute and communication per batch, efficiency on both links."""
    by = {(r["p"], r["gpus"], r["link"]): r for r in rows}
    lines = ["| p | GPUs | batch compute | all-reduce NVLink / IB | projection per batch | efficiency NVLink / IB "
             "(batch; with projection) |", "|---|---|---|---|---|---|"]
    for p, P in sorted({(r["p"], r["gpus"]) for r in rows}):
        nv, ib = by[(p, P, "NVLink")], by[(p, P, "InfiniBand")]
        lines.append(f"| {p:.0e} | {P} | {nv['batch_compute_ms']:.3g} ms | {nv['allreduce_ms']:.2g} / "
                     f"{ib['allreduce_ms']:.2g} ms | {nv['projection_compute_ms']:.3g} ms | "
                     f"{nv['batch_efficiency']:.2f} / {ib['batch_efficiency']:.2f}; "
                     f"{nv['efficiency']:.2f} / {ib['efficiency']:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--m", type=int, default=10_000)
    parser.add_argument("--d", type=int, default=128)
    parser.add_argument("--c", type=int, default=10)
    parser.add_argument("--json", default=None, help="also write the rows as JSON (a file or a directory)")
    args = parser.parse_args(argv)
    rows = table(m=args.m, d=args.d, c=args.c)
    print(f"model: m = {args.m}, d = {args.d}, c = {args.c}, q = 150, s = 3000, float32; GPU rate {RATE:.0e} "
          f"flop/s; links {', '.join(f'{k} {b / 1e9:.0f} GB/s, {a * 1e6:.0f} us' for k, (b, a) in LINKS.items())}; "
          f"{STEPS} projection steps every p / m batches")
    print(markdown(rows))
    print()
    print(pivot(rows))
    if args.json:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from harness import write_json

        config = {"m": args.m, "d": args.d, "c": args.c, "rate_flops": RATE, "links": LINKS, "steps": STEPS,
                  "kind": "model, not a measurement"}
        print(f"wrote {write_json({'benchmark': 'distributed_scaling_model', 'config': config, 'rows': rows}, args.json)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
