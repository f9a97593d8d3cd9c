"""The arguments every conf command takes: ``[--cfg|--plan] conf=NAME key=value ...``."""

from __future__ import annotations

import sys
from typing import Sequence

__all__ = ["DRY_RUN_FLAGS", "split_flags", "parse_args", "load_args"]

#: the dry-run options of train and sweep
DRY_RUN_FLAGS = ("--cfg", "--plan")


def split_flags(argv: Sequence[str], allowed: Sequence[str] = DRY_RUN_FLAGS) -> tuple[set[str], list[str]]:
    """``(options, other arguments)``; help options stay with the arguments.

    Raises:
        ConfigError: an option not in ``allowed`` (the message lists them).
    """
    from ..config import ConfigError

    flags, rest = set(), []
    for a in argv:
        if a.startswith("--") and a not in ("--help",):
            if a not in allowed:
                raise ConfigError(f"Unknown option {a!r}; allowed: {', '.join(allowed) or 'none'}, --help")
            flags.add(a)
        else:
            rest.append(a)
    if len(flags) > 1:
        raise ConfigError(f"Options {', '.join(sorted(flags))} exclude each other: give one")
    return flags, rest


def parse_args(argv: Sequence[str], usage: str) -> tuple[str, list[str]] | None:
    """Split ``conf=NAME`` from the dotlist overrides; None after printing help."""
    from ..config import ConfigError, available_confs, conf_dir

    argv = list(argv)
    if not argv or any(a in ("-h", "--help", "help") for a in argv):
        print(usage.format(conf_dir=conf_dir(), confs="\n".join(f"  {c}" for c in available_confs()) or "  (none)"))
        return None
    confs = [a for a in argv if a.startswith("conf=")]
    if len(confs) != 1:
        raise ConfigError(
            f"Expected exactly one conf=NAME argument, got {len(confs)}; available confs: "
            f"{', '.join(available_confs())}"
        )
    bad = [a for a in argv if "=" not in a and not a.startswith("~")]  # ~callbacks.NAME removes a callback
    if bad:
        raise ConfigError(f"Arguments must be key=value, got {bad}; see --help")
    return confs[0].split("=", 1)[1], [a for a in argv if not a.startswith("conf=")]


def load_args(argv: Sequence[str], usage: str, loader):
    """Parse ``[--cfg|--plan] conf=NAME key=value ...`` and load it with ``loader(name, overrides)``:
    ``((object, overrides, options), None)``, or ``(None, exit code)`` after printing help (0) or a
    config error (2)."""
    from ..config import ConfigError

    try:
        flags, argv = split_flags(argv)
        parsed = parse_args(argv, usage)
        if parsed is None:
            return None, 0
        return (loader(*parsed), parsed[1], flags), None
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None, 2
