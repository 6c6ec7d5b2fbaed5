"""Command line: ``python -m kops info | demo | train`` (also installed as ``kops``)."""
from __future__ import annotations

import argparse
import json
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="kops", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_info = sub.add_parser("info", help="versions, build configuration and available backends")
    p_info.add_argument("--json", action="store_true", help="print the report as JSON")
    p_demo = sub.add_parser("demo", help="a short kernel-product demo on every available backend")
    p_demo.add_argument("--n", type=int, default=20000)
    p_demo.add_argument("--d", type=int, default=64)
    p_demo.add_argument("--c", type=int, default=10)
    p_train = sub.add_parser("train", help="train EigenPro 4 on the bundled digits data; compare with the exact solver")
    p_train.add_argument("--epochs", type=int, default=5)
    p_train.add_argument("--centers", type=int, default=1000)
    p_train.add_argument("--kernel", default="laplacian")
    p_train.add_argument("--bandwidth", type=float, default=10.0)
    p_train.add_argument("--batch-size", type=int, default=256)
    p_train.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    p_train.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    if args.command == "info":
        from .info import format_info, info

        print(json.dumps(info(), indent=2) if args.json else format_info())
        return 0
    if args.command == "demo":
        from .demo import run_demo

        return run_demo(n=args.n, d=args.d, c=args.c)
    if args.command == "train":
        from .solvers.main_job import run_train

        return run_train(epochs=args.epochs, centers=args.centers, kernel=args.kernel, bandwidth=args.bandwidth,
                         batch_size=args.batch_size, device=args.device, seed=args.seed)
    return 2


if __name__ == "__main__":
    sys.exit(main())
