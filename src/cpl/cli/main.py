"""``cpl``: one console command, its subcommands in one table.

Each subcommand is a function ``main(argv) -> exit code`` named by module and attribute, imported
only when that subcommand runs, so ``cpl --help`` loads nothing but this file. A subcommand whose
module is not installed (an optional part of the project) is left out of the help and answers
with a one-line error. Adding a subcommand is adding one line to :data:`COMMANDS`.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from dataclasses import dataclass
from typing import Optional, Sequence

__all__ = ["Command", "COMMANDS", "main", "available"]

#: libraries of the `all` extra (the light core install lacks them)
OPTIONAL = ("omegaconf", "yaml", "mlflow", "matplotlib", "scipy", "tqdm", "jsonargparse")


@dataclass(frozen=True)
class Command:
    """A subcommand: ``module:function`` taking the argument list and returning an exit code."""

    module: str
    function: str
    summary: str

    def installed(self) -> bool:
        if self.module in sys.modules:
            return True
        try:
            return importlib.util.find_spec(self.module) is not None
        except (ModuleNotFoundError, ValueError):  # a parent package is missing
            return False

    def run(self, argv: Sequence[str]) -> int:
        try:
            return int(getattr(importlib.import_module(self.module), self.function)(list(argv)) or 0)
        except ModuleNotFoundError as exc:  # the light core install has no configs, tracking or figures
            if (exc.name or "").split(".")[0] not in OPTIONAL:
                raise
            print(f"error: this command needs {exc.name!r}: pip install 'cpl[all]'", file=sys.stderr)
            return 2


#: name -> subcommand, in the order of the help
COMMANDS: dict[str, Command] = {
    "train": Command("cpl.cli", "train_main", "train one run of a conf, tracked in MLflow"),
    "sweep": Command("cpl.cli", "sweep_main", "run or resume a sweep (a parent run, a child run per cell)"),
    "runs": Command("cpl.cli.runs", "main", "list and compare the runs of the store in the terminal"),
    "ui": Command("cpl.cli.ui", "main", "start MLflow's UI on the store and print the model-training view's URL"),
    "phase": Command("cpl.cli.phase", "main", "phase portraits of the two-pathway ODE (paper Figs. 1 and 7)"),
    "bench": Command("cpl.cli.bench", "bench_main", "speed against a plain PyTorch loop doing the same work"),
    "reproduce": Command("cpl.reproduce", "main", "reproduce the paper's claims and write a report"),
    "replay": Command("cpl.tracking.spill", "main", "write the rows a run spilled to a file into the store"),
}

USAGE = """\
usage: cpl COMMAND [conf=NAME] [key=value ...] [--cfg | --plan] [--help]

Critical learning periods in deep linear networks: Lightning + MLflow.

Commands:
{commands}

Every command takes `key=value` arguments; train, sweep and bench also `conf=NAME`
(conf/NAME.yaml) followed by OmegaConf overrides such as model.depth=4. `cpl COMMAND --help`
explains one command. Examples:
  cpl train conf=matcomp_rank10to5 model.depth=4
  cpl train conf=matcomp_rank10to5 --plan
  cpl sweep conf=matcomp_depth_sweep_quick
  cpl runs
  cpl ui
"""


def available() -> dict[str, Command]:
    """The subcommands whose module is installed."""
    return {name: cmd for name, cmd in COMMANDS.items() if cmd.installed()}


def usage() -> str:
    cmds = available()
    width = max(len(n) for n in cmds)
    return USAGE.format(commands="\n".join(f"  {n:{width}s}  {c.summary}" for n, c in cmds.items()))


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``cpl COMMAND ...``; returns the exit code (0 done, 1 failed, 2 bad arguments, 130 interrupted)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        from .. import __version__

        print(f"cpl {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    cmd = COMMANDS.get(name)
    if cmd is None:
        print(f"error: unknown command {name!r}; commands: {', '.join(available())} (see cpl --help)", file=sys.stderr)
        return 2
    if not cmd.installed():
        print(f"error: `cpl {name}` is not available in this installation ({cmd.module} is missing)", file=sys.stderr)
        return 2
    return cmd.run(rest)
