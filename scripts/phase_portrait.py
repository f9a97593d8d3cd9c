#!/usr/bin/env python
"""Phase portraits of the two-pathway scalar ODE (paper Figs. 1 and 7): ``cpl phase`` with --flags.

The flags are translated to ``cpl phase``'s key=value options (``cpl phase --help``), which hold
the logic (:mod:`cpl.cli.phase`).
"""

import argparse
import sys
from pathlib import Path


def to_options(args: argparse.Namespace) -> list[str]:
    """The ``cpl phase`` key=value options of the parsed flags."""

    def lst(values) -> str:
        return "[" + ",".join(str(v) for v in values) + "]"

    opts = [
        f"depths={lst(args.depths)}",
        f"s={args.s}",
        f"dt={args.dt}",
        f"epochs={args.epochs}",
        f"early={lst(args.early)}",
        f"late={lst(args.late)}",
        f"inits={lst(args.inits)}",
        f"out={args.out}",
        f"tracking.experiment={args.experiment}",
    ]
    if args.tracking_uri:
        opts.append(f"tracking.uri={args.tracking_uri}")
    if args.no_mlflow:
        opts.append("tracking.enabled=false")
    return opts


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depths", type=int, nargs="+", default=[2, 5, 8, 13], help="pathway depths D (columns)")
    parser.add_argument("--s", type=float, default=10.0, help="singular value of the mode (default 10)")
    parser.add_argument("--dt", type=float, default=0.01, help="time units per epoch (default 0.01)")
    parser.add_argument("--epochs", type=int, default=300, help="length of each trajectory in epochs (default 300)")
    window = dict(type=int, nargs=2, metavar=("START", "END"))
    parser.add_argument("--early", default=[0, 15], help="early deficit epochs (default 0 15)", **window)
    parser.add_argument("--late", default=[100, 115], help="late deficit epochs (default 100 115)", **window)
    parser.add_argument("--inits", nargs="+", default=["large", "small"], choices=["large", "small"])
    parser.add_argument("--out", type=Path, default=Path("outputs/phase"), help="folder of the figures")
    parser.add_argument("--tracking-uri", default=None, help="MLflow store (default $MLFLOW_TRACKING_URI or mlruns)")
    parser.add_argument("--experiment", default="cpl-phase", help="MLflow experiment name (default cpl-phase)")
    parser.add_argument("--no-mlflow", action="store_true", help="only save the figures")
    from cpl.cli.phase import main as phase_main

    return phase_main(to_options(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
