"""``cpl phase``: phase portraits of the two-pathway scalar ODE in the (K_a, K_b) plane (paper Figs. 1 and 7).

One figure per init (large: q^2 - p^2 = 1; small: balanced), rows = deficits (early, late; pathway
b gated), columns = depths, saved as PNG and PDF and logged with the final share of pathway a to an
MLflow run. Time: one epoch = ``dt`` time units (see :mod:`cpl.families.multipath.phase`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from ..config import require
from .options import parse_options

__all__ = ["main", "PhaseOptions"]

USAGE = """\
usage: cpl phase [depths=[2,5,8,13]] [s=10] [dt=0.01] [epochs=300] [early=[0,15]] [late=[100,115]]
                 [inits=[large,small]] [out=outputs/phase] [tracking.enabled=true] [tracking.uri=URI]
                 [tracking.experiment=cpl-phase]
       (or: python scripts/phase_portrait.py --depths 2 5 --epochs 300 ...)

Phase portraits of the two-pathway gradient flow (paper Figs. 1 and 7): for each init, rows =
deficits (pathway b gated over `early` and `late` epochs), columns = depths. Saves
phase_<init>.png and .pdf under `out` and logs them, with the final share of pathway a per
deficit and depth (metrics phase/<init>/<deficit>/D<depth>/share_a), to an MLflow run.

  depths           pathway depths D (columns)
  s                singular value of the mode
  dt, epochs       time units per epoch, length of each trajectory in epochs
  early, late      deficit windows in epochs [start, end)
  inits            large (q^2 - p^2 = 1) and/or small (balanced)
  tracking.enabled false: only save the figures
"""


@dataclass
class PhaseTracking:
    enabled: bool = True
    uri: Optional[str] = None
    experiment: str = "cpl-phase"


@dataclass
class PhaseOptions:
    depths: list[int] = field(default_factory=lambda: [2, 5, 8, 13])
    s: float = 10.0
    dt: float = 0.01
    epochs: int = 300
    early: list[int] = field(default_factory=lambda: [0, 15])
    late: list[int] = field(default_factory=lambda: [100, 115])
    inits: list[str] = field(default_factory=lambda: ["large", "small"])
    out: str = "outputs/phase"
    tracking: PhaseTracking = field(default_factory=PhaseTracking)


def _check(o: PhaseOptions) -> None:
    require(len(o.depths) >= 1 and all(d >= 1 for d in o.depths), "depths", o.depths, "a list of integers >= 1")
    require(o.s > 0, "s", o.s, "a number > 0")
    require(o.dt > 0, "dt", o.dt, "a number > 0")
    require(o.epochs >= 1, "epochs", o.epochs, "an integer >= 1")
    for key in ("early", "late"):
        w = getattr(o, key)
        require(len(w) == 2 and 0 <= w[0] < w[1], key, w, "[start, end] epochs with 0 <= start < end")
    require(len(o.inits) >= 1 and set(o.inits) <= {"large", "small"}, "inits", o.inits, "a list of large and/or small")


def main(argv: Sequence[str]) -> int:
    o, code = parse_options(argv, PhaseOptions, USAGE, _check)
    if code is not None:
        return code
    from .. import tracking
    from ..families.multipath.figures import phase_portrait_figure
    from ..families.multipath.phase import INITS
    from ..figures import log_figure

    deficits = {"early": tuple(o.early), "late": tuple(o.late)}
    out = Path(o.out)
    out.mkdir(parents=True, exist_ok=True)
    client = run_id = None
    if o.tracking.enabled:
        uri = tracking.tracking_uri(o.tracking.uri)
        client = tracking.get_client(uri)
        name = "phase_portrait " + " ".join(a for a in argv if not a.startswith(("tracking.", "out=")))
        run_id = tracking.start_run(client, o.tracking.experiment, name.strip(), {"cpl.kind": "phase"})
        params = {"depths": o.depths, "s": o.s, "dt": o.dt, "epochs": o.epochs, "early": o.early, "late": o.late}
        tracking.log_params(client, run_id, params)
    try:
        for init in o.inits:
            fig, shares = phase_portrait_figure(INITS[init], o.depths, o.s, o.dt, o.epochs, deficits)
            for ext in ("png", "pdf"):
                fig.savefig(out / f"phase_{init}.{ext}")
            print(
                f"{out / f'phase_{init}.png'} (+ .pdf): final share of pathway a "
                + ", ".join(f"{d} D={k}: {v:.3f}" for (d, k), v in shares.items())
            )
            if client is not None:
                log_figure(client, run_id, fig, f"figures/phase_{init}.png")
                for (d, k), v in shares.items():
                    client.log_metric(run_id, f"phase/{init}/{d}/D{k}/share_a", v)
    except BaseException:
        if client is not None:
            client.set_terminated(run_id, "FAILED")
        raise
    if client is not None:
        client.set_terminated(run_id, "FINISHED")
        from .ui import print_run_links

        print_run_links(tracking.tracking_uri(o.tracking.uri), [run_id])
    return 0
