"""Command line: ``python -m kops info | demo`` (also installed as ``kops``)."""
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
    args = parser.parse_args(argv)

    if args.command == "info":
        from .info import format_info, info

        print(json.dumps(info(), indent=2) if args.json else format_info())
        return 0
    if args.command == "demo":
        from .demo import run_demo

        return run_demo(n=args.n, d=args.d, c=args.c)
    return 2


if __name__ == "__main__":
    sys.exit(main())
