#!/usr/bin/env python
"""Phase portraits of the two-pathway scalar ODE in the (K_a, K_b) plane (paper Figs. 1 and 7).

Saves one PNG per init (large: q^2 - p^2 = 1; small: balanced) with rows = deficits (early: epochs
0-15, late: 100-115; pathway b gated) and columns = depths, and logs them with the final share of
pathway a to an MLflow run. Time: one epoch = --dt time units (see cpl.phase). The logic is in cpl.phase.
"""

import argparse
import sys
from pathlib import Path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depths", type=int, nargs="+", default=[2, 5, 8, 13], help="pathway depths D (columns)")
    parser.add_argument("--s", type=float, default=10.0, help="singular value of the mode (default 10)")
    parser.add_argument("--dt", type=float, default=0.01, help="time units per epoch (default 0.01)")
    parser.add_argument("--epochs", type=int, default=300, help="length of each trajectory in epochs (default 300)")
    parser.add_argument(
        "--early",
        type=int,
        nargs=2,
        default=[0, 15],
        metavar=("START", "END"),
        help="early deficit epochs (default 0 15)",
    )
    parser.add_argument(
        "--late",
        type=int,
        nargs=2,
        default=[100, 115],
        metavar=("START", "END"),
        help="late deficit epochs (default 100 115)",
    )
    parser.add_argument(
        "--inits", nargs="+", default=["large", "small"], choices=["large", "small"], help="which inits to draw"
    )
    parser.add_argument(
        "--out", type=Path, default=Path("outputs/phase"), help="folder for the PNGs (default outputs/phase)"
    )
    parser.add_argument(
        "--tracking-uri", default=None, help="MLflow store (default $MLFLOW_TRACKING_URI or sqlite:///mlruns/mlflow.db)"
    )
    parser.add_argument("--experiment", default="cpl-phase", help="MLflow experiment name (default cpl-phase)")
    parser.add_argument("--no-mlflow", action="store_true", help="only save the PNGs")
    args = parser.parse_args(argv)

    from cpl import tracking
    from cpl.families.multipath.figures import phase_portrait_figure
    from cpl.families.multipath.phase import INITS

    if any(d < 1 for d in args.depths) or args.dt <= 0 or args.epochs < 1:
        parser.error("depths must be >= 1, --dt > 0 and --epochs >= 1")
    deficits = {"early": tuple(args.early), "late": tuple(args.late)}
    args.out.mkdir(parents=True, exist_ok=True)
    client = run_id = None
    if not args.no_mlflow:
        uri = tracking.tracking_uri(args.tracking_uri)
        client = tracking.get_client(uri)
        run_id = tracking.start_run(client, args.experiment, "phase_portrait", {"cpl.kind": "phase"})
        tracking.log_params(
            client,
            run_id,
            {
                "depths": args.depths,
                "s": args.s,
                "dt": args.dt,
                "epochs": args.epochs,
                "early": args.early,
                "late": args.late,
            },
        )
    try:
        for name in args.inits:
            fig, shares = phase_portrait_figure(INITS[name], args.depths, args.s, args.dt, args.epochs, deficits)
            path = args.out / f"phase_{name}.png"
            fig.savefig(path)
            print(
                f"{path}: final share of pathway a " + ", ".join(f"{d} D={k}: {v:.3f}" for (d, k), v in shares.items())
            )
            if client is not None:
                client.log_figure(run_id, fig, f"figures/phase_{name}.png")
                for (d, k), v in shares.items():
                    client.log_metric(run_id, f"phase/{name}/{d}/D{k}/share_a", v)
    except BaseException:
        if client is not None:
            client.set_terminated(run_id, "FAILED")
        raise
    if client is not None:
        client.set_terminated(run_id, "FINISHED")
        print(f"MLflow run {run_id} in {tracking.tracking_uri(args.tracking_uri)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
