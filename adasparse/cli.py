"""The ``adasparse`` command. Thin: it parses arguments and calls the library."""

from __future__ import annotations

import argparse
import sys

from . import __version__


def _bench(args: argparse.Namespace) -> int:
    if args.what == "ops":
        from .bench import ops

        return ops.main(args.rest)
    raise SystemExit(f"adasparse bench: unknown benchmark {args.what!r}")


def _demo(args: argparse.Namespace) -> int:
    from .bench import showcase

    return showcase.main()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="adasparse", description="Adaptively sparse Transformers (α-entmax attention).")
    p.add_argument("--version", action="version", version=f"adasparse {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    b = sub.add_parser("bench", help="run a benchmark and print a table of ratios", add_help=True)
    b.add_argument("what", choices=["ops"], help="ops: the α-entmax mappings vs torch.softmax")
    b.add_argument("rest", nargs=argparse.REMAINDER, help="options passed to the benchmark (see --help there)")
    b.set_defaults(func=_bench)
    d = sub.add_parser("demo", help="the main job: a short showcase (full demo arrives with the toolkit)")
    d.set_defaults(func=_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
