"""The reproduction as data: the figures, jobs and claims of ``conf/reproduce/*.yaml``, loaded and checked.

A :class:`Job` is one sweep (or one sweep per variant) of an existing conf; a :class:`Claim` is one
sentence of the paper with a measure (an evaluator of :mod:`cpl.reproduce.measures`, by name), a
comparison and a threshold. :func:`load` reads both files, resolves a profile (``quick`` or
``full``) and checks every reference (confs, jobs, figures, measure kinds and their arguments)
before anything runs, with one-line errors naming the key, the value and what is allowed.
"""

from __future__ import annotations

import inspect
import operator
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from omegaconf import OmegaConf

from ..config import ConfigError, available_confs, conf_dir, require

__all__ = ["Job", "Claim", "Declarations", "load", "PROFILES", "TESTS"]

PROFILES = ("quick", "full")
#: the comparisons a claim may use
TESTS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_JOB_KEYS = {"figure", "kind", "conf", "overrides", "variants", "artifacts", "phase", *PROFILES}
_CLAIM_KEYS = {"id", "figure", "claim", "measure", "test", "threshold", "source", "expect", *PROFILES}


@dataclass
class Job:
    """One job of a profile: a conf swept once per variant (``kind: sweep``) or the ODE's phase portraits."""

    name: str
    figure: str
    kind: str = "sweep"
    conf: str = ""
    overrides: list[str] = field(default_factory=list)
    #: variant label ("" when there are none) -> its extra overrides
    variants: dict[str, list[str]] = field(default_factory=lambda: {"": []})
    artifacts: dict[str, Any] = field(default_factory=dict)
    phase: dict[str, Any] = field(default_factory=dict)


@dataclass
class Claim:
    """One claim of the paper, checked as ``measure(...) <test> threshold``."""

    id: str
    figure: str
    claim: str
    measure: dict[str, Any]
    test: str
    threshold: float
    source: str = ""
    observation: bool = False  #: reported, never fails the run (a question the paper does not answer)

    @property
    def jobs(self) -> list[str]:
        return [self.measure["job"]]

    def passes(self, value: float) -> bool:
        return bool(TESTS[self.test](value, self.threshold))


@dataclass
class Declarations:
    """The figures (id -> title), jobs and claims of one profile."""

    profile: str
    figures: dict[str, str]
    jobs: dict[str, Job]
    claims: list[Claim]

    def select(self, only: Sequence[str]) -> "Declarations":
        """The figures named in ``only`` (figure ids or job names), their jobs and claims."""
        known = set(self.figures) | set(self.jobs)
        for name in only:
            require(name in known, "only", list(only), f"figure ids or job names from {sorted(known)}")
        figs = {f for f in only if f in self.figures} | {self.jobs[j].figure for j in only if j in self.jobs}
        claims = [c for c in self.claims if c.figure in figs]
        jobs = {n: j for n, j in self.jobs.items() if j.figure in figs or n in only}
        jobs.update({n: self.jobs[n] for c in claims for n in c.jobs})
        return Declarations(self.profile, {k: v for k, v in self.figures.items() if k in figs}, jobs, claims)


def _profiled(node: dict[str, Any], profile: str) -> dict[str, Any]:
    out = {k: v for k, v in node.items() if k not in PROFILES}
    out.update(node.get(profile) or {})
    return out


def _variants(raw: Any, where: str) -> dict[str, list[str]]:
    if raw is None:
        return {"": []}
    axes = raw if isinstance(raw, list) else [raw]
    require(
        all(isinstance(a, dict) and a for a in axes),
        f"{where}.variants",
        raw,
        "a mapping label -> overrides, or a list of such mappings (their product)",
    )
    out = {}
    for combo in product(*(list(a.items()) for a in axes)):
        out["-".join(label for label, _ in combo)] = [o for _, overrides in combo for o in overrides]
    return out


def _job(name: str, node: dict[str, Any], profile: str, figures: dict[str, str], confs: list[str]) -> Job:
    where = f"jobs.{name}"
    bad = set(node) - _JOB_KEYS
    require(not bad, f"{where}", sorted(bad), f"keys from {sorted(_JOB_KEYS)}")
    node = _profiled(node, profile)
    require(node.get("figure") in figures, f"{where}.figure", node.get("figure"), f"one of {sorted(figures)}")
    kind = node.get("kind", "sweep")
    require(kind in ("sweep", "phase"), f"{where}.kind", kind, "sweep or phase")
    if kind == "sweep":
        require(node.get("conf") in confs, f"{where}.conf", node.get("conf"), "the name of a conf in conf/")
    return Job(
        name=name,
        figure=node["figure"],
        kind=kind,
        conf=node.get("conf", ""),
        overrides=[str(o) for o in node.get("overrides") or []],
        variants=_variants(node.get("variants"), where),
        artifacts=dict(node.get("artifacts") or {}),
        phase=dict(node.get("phase") or {}),
    )


def _claim(node: dict[str, Any], profile: str, figures: dict[str, str], jobs: dict[str, Job]) -> Claim:
    from .measures import MEASURES

    cid = node.get("id", "?")
    where = f"claims.{cid}"
    bad = set(node) - _CLAIM_KEYS
    require(not bad, where, sorted(bad), f"keys from {sorted(_CLAIM_KEYS)}")
    measure = dict(node.get("measure") or {})
    measure.update(node.get(profile) or {})
    kind = measure.pop("kind", None)
    require(kind in MEASURES, f"{where}.measure.kind", kind, f"one of {sorted(MEASURES)}")
    require(measure.get("job") in jobs, f"{where}.measure.job", measure.get("job"), f"one of {sorted(jobs)}")
    try:
        inspect.signature(MEASURES[kind]).bind(None, **measure)
    except TypeError as exc:
        raise ConfigError(f"Invalid value for '{where}.measure': got {measure}; allowed: arguments of {kind} ({exc})")
    variant = measure.get("variant", "")
    require(
        "variant" not in inspect.signature(MEASURES[kind]).parameters or variant in jobs[measure["job"]].variants,
        f"{where}.measure.variant",
        variant,
        f"a variant of job {measure['job']}: {sorted(jobs[measure['job']].variants)}",
    )
    require(node.get("test") in TESTS, f"{where}.test", node.get("test"), " ".join(TESTS))
    require(isinstance(node.get("threshold"), (int, float)), f"{where}.threshold", node.get("threshold"), "a number")
    require(node.get("figure") in figures, f"{where}.figure", node.get("figure"), f"one of {sorted(figures)}")
    require(
        bool(node.get("claim")) and node.get("expect", "claim") in ("claim", "observation"),
        where,
        node.get("expect"),
        "a `claim` sentence and expect: claim or observation",
    )
    return Claim(
        id=cid,
        figure=node["figure"],
        claim=node["claim"],
        measure={"kind": kind, **measure},
        test=node["test"],
        threshold=float(node["threshold"]),
        source=node.get("source", ""),
        observation=node.get("expect") == "observation",
    )


def load(profile: str = "quick", directory: Optional[Path] = None) -> Declarations:
    """The declarations of ``conf/reproduce/`` for ``profile``, every reference checked.

    Raises:
        ConfigError: an unknown profile, conf, job, figure or measure kind, bad measure arguments,
            a duplicate claim id, an unknown comparison or a threshold that is not a number.
    """
    require(profile in PROFILES, "profile", profile, " or ".join(PROFILES))
    directory = Path(directory or conf_dir())
    raw_jobs = OmegaConf.to_container(OmegaConf.load(directory / "reproduce" / "jobs.yaml"))
    raw_claims = OmegaConf.to_container(OmegaConf.load(directory / "reproduce" / "claims.yaml"))
    figures = dict(raw_jobs["figures"])
    confs = available_confs(directory)
    jobs = {name: _job(name, node, profile, figures, confs) for name, node in raw_jobs["jobs"].items()}
    claims = [_claim(node, profile, figures, jobs) for node in raw_claims["claims"]]
    ids = [c.id for c in claims]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    require(not dup, "claims.id", dup, "unique claim ids")
    return Declarations(profile, figures, jobs, claims)
