"""Analytic references of matrix completion, for :class:`cpl.callbacks.ODEReference`.

Each class is a thin stateful layer over the pure functions of :mod:`cpl.theory`: it reads the
state, the tasks and the task switches (from the schedule, i.e. the ``TaskSwitch`` callback) off a
:class:`~cpl.families.matcomp.module.MatrixCompletionModule`, converts steps to time (``t = lr * step``) and
predicts the top-k singular values of the end-to-end matrix (quantity ``"sv"``, logged as
``ode/sv_1`` ... next to ``sgd/sv_1`` ...).

- :class:`FactorizationReference`: gradient flow of the balanced deep factorisation (docs/theory.md 2),
  integrated with ``solve_ivp``; any depth, any observation set.
- :class:`SaxeReference`: Saxe's logistic closed form (docs/theory.md 3); depth 2, full observation,
  init aligned with targets that share singular vectors.
- :class:`BraunReference`: exact depth-2 dynamics from any balanced init (docs/theory.md 4), time
  ``t = lr * step / N^2``; full observation.

Outside its conditions a reference still predicts, and ``conditions()`` says which assumption fails.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from ...theory.closed_form import braun_trajectory, joint_basis, lambda_balance, saxe_piecewise
from ...theory.factorization import balance_gap, integrate_end_to_end

__all__ = [
    "MatCompReference",
    "FactorizationReference",
    "SaxeReference",
    "BraunReference",
    "REFERENCES",
    "make_reference",
]

#: relative imbalance of the factors above which a "balanced" reference warns
BALANCE_TOL = 1e-5
#: relative off-diagonal residual above which init and targets do not share a basis
ALIGN_TOL = 1e-4


class MatCompReference:
    """Common part: the schedule as per-member task pieces, the step grid and the SGD observation.

    Args:
        top_k: how many singular values to predict and observe.
        every_n_steps: the logging interval; predictions on that grid are computed in ``prepare``
            (other steps are computed on demand).
    """

    name = "matrix-completion reference"

    def __init__(self, top_k: int = 10, every_n_steps: Optional[int] = None):
        if top_k < 1:
            raise ValueError(f"Expected `top_k` >= 1, got {top_k}")
        if every_n_steps is not None and every_n_steps < 1:
            raise ValueError(f"Expected `every_n_steps` >= 1 or None, got {every_n_steps}")
        self.top_k, self.every_n_steps = top_k, every_n_steps
        self.problems: list[str] = []
        self._cache: dict[int, np.ndarray] = {}

    # ---- reading the module and the schedule
    @staticmethod
    def task_pieces(pl_module: Any, schedule: Sequence, start_step: int) -> list[list[tuple[int, int]]]:
        """Per member, ``[(first step, task index), ...]`` from ``start_step`` on.

        The task at ``start_step`` is the module's current one, updated by every ``switch`` event
        at or before ``start_step``; later switch events start new pieces.
        """
        names = list(pl_module.task_names)
        current = list(pl_module.current_tasks)
        out = []
        for e in range(pl_module.n_members):
            task, later = current[e], []
            for ev in schedule:
                if ev.kind != "switch" or (ev.members is not None and e not in ev.members):
                    continue
                to = ev.info.get("to")
                if to not in names:
                    raise ValueError(f"Expected a switch to one of the module's tasks {names}, got {to!r}")
                if ev.start <= start_step:
                    task = to
                else:
                    later.append((int(ev.start), names.index(to)))
            out.append([(int(start_step), names.index(task))] + later)
        return out

    def prepare(self, pl_module: Any, schedule: Sequence, lr: float, start_step: int, max_steps: int) -> None:
        self.lr, self.start_step, self.max_steps = float(lr), int(start_step), int(max_steps)
        self.problems = [
            f"schedule events of kind {ev.kind!r} are not modelled" for ev in schedule if ev.kind != "switch"
        ]
        self.w0 = pl_module.end_to_end().double().cpu().numpy()
        self.factors = [f.detach().double().cpu().numpy() for f in pl_module.model.factors]
        self.targets = pl_module.targets.detach().double().cpu().numpy()  # (T, E, N, N)
        self.masks = pl_module.masks.detach().double().cpu().numpy()
        self.pieces = self.task_pieces(pl_module, schedule, self.start_step)
        self.depth, self.size = int(pl_module.model.depth), int(pl_module.model.size)
        self.setup()
        self._cache = {}
        if self.every_n_steps:
            first = -(-self.start_step // self.every_n_steps) * self.every_n_steps
            grid = sorted({self.start_step, self.max_steps, *range(first, self.max_steps + 1, self.every_n_steps)})
            self._cache = dict(zip(grid, self.solve(grid)))

    def setup(self) -> None:
        """Per-kind checks and pre-computation after the state was read."""

    def solve(self, steps: Sequence[int]) -> list[np.ndarray]:  # pragma: no cover - abstract
        """Top-k singular values (E, k) at each of the sorted ``steps``."""
        raise NotImplementedError

    def predict(self, step: int) -> dict[str, np.ndarray]:
        step = int(step)
        if step not in self._cache:
            self._cache[step] = self.solve([step])[0]
        return {"sv": self._cache[step]}

    def observe(self, pl_module: Any) -> dict[str, np.ndarray]:
        import torch

        with torch.no_grad():
            s = torch.linalg.svdvals(pl_module.end_to_end().double()).cpu().numpy()
        return {"sv": s[:, : self.top_k]}

    def conditions(self) -> Optional[str]:
        return "; ".join(self.problems) or None

    # ---- helpers
    def top(self, values: np.ndarray) -> np.ndarray:
        return np.sort(np.abs(values), axis=-1)[..., ::-1][..., : self.top_k]

    def observed_fraction(self) -> list[str]:
        """Sentences for the tasks in use that are not fully observed."""
        out = []
        for e, pieces in enumerate(self.pieces):
            for _, task in pieces:
                n_obs = int(self.masks[task, e].sum())
                if n_obs < self.masks[task, e].size:
                    out.append(
                        f"only {n_obs} of the {self.masks[task, e].size} entries are observed (the closed form "
                        "assumes all)"
                    )
        return sorted(set(out))

    def closed_form_conditions(self, what: str) -> None:
        """The conditions the depth-2 closed forms share: depth 2 (else an error naming ``what``)
        and every entry observed (else a noted problem)."""
        if self.depth != 2:
            raise ValueError(f"Expected a depth-2 factorisation for {what}, got depth {self.depth}")
        self.problems += self.observed_fraction()

    def check_balanced(self, note: str = "") -> None:
        """Note a problem when the factors are not balanced (``W_(j+1)^T W_(j+1) = W_j W_j^T``)."""
        gap = max(balance_gap([f[e] for f in self.factors]) for e in range(self.w0.shape[0]))
        if gap > BALANCE_TOL:
            self.problems.append(f"the factors are not balanced (relative imbalance {gap:.2g} > {BALANCE_TOL:g}){note}")


class FactorizationReference(MatCompReference):
    """Gradient flow of the balanced deep factorisation, ``dW/dt = -sum_j (WW^T)^((j-1)/D) G (W^TW)^((D-j)/D)``.

    Integrated with ``solve_ivp`` from the module's end-to-end matrix, the integration split at
    every task switch; ``t = lr * step``. Conditions: balanced factors.

    Example::

        >>> FactorizationReference(top_k=5, rtol=1e-6).name
        'balanced gradient flow (solve_ivp)'
    """

    name = "balanced gradient flow (solve_ivp)"

    def __init__(
        self, top_k: int = 10, every_n_steps: Optional[int] = None, rtol: float = 1e-7, atol: Optional[float] = None
    ):
        super().__init__(top_k, every_n_steps)
        if rtol <= 0:
            raise ValueError(f"Expected `rtol` > 0, got {rtol}")
        self.rtol, self.atol = rtol, atol if atol is not None else rtol * 1e-2

    def setup(self) -> None:
        self.check_balanced("; the end-to-end ODE assumes W_(j+1)^T W_(j+1) = W_j W_j^T")
        self._state = [(self.start_step, self.w0[e]) for e in range(self.w0.shape[0])]

    def solve(self, steps: Sequence[int]) -> list[np.ndarray]:
        out = np.empty((len(steps), self.w0.shape[0], min(self.top_k, self.size)))
        for e, pieces in enumerate(self.pieces):
            start, w = self._state[e]
            if steps[0] < start:  # going back: restart from the beginning
                start, w = self.start_step, self.w0[e]
            mats = [(self.lr * s, self.targets[task, e], self.masks[task, e]) for s, task in pieces]
            ws = integrate_end_to_end(
                w,
                mats,
                self.lr * np.asarray(steps, float),
                self.depth,
                t0=self.lr * start,
                rtol=self.rtol,
                atol=self.atol,
            )
            out[:, e] = self.top(np.linalg.svd(ws, compute_uv=False))
            self._state[e] = (steps[-1], ws[-1])
        return list(out)


class SaxeReference(MatCompReference):
    """Saxe's closed form per mode, ``a(t) = s e^(2st/N^2) / (e^(2st/N^2) - 1 + s/a0)``, ``t = lr * step``.

    The modes live in the joint SVD basis of the initial ``W`` and the targets; a switch restarts
    every mode from its current value with the new target's values. Depth 2 only. Conditions:
    full observation; an init aligned with targets that share singular vectors; balanced factors.

    Example::

        >>> SaxeReference(top_k=3).name
        "Saxe's closed form"
    """

    name = "Saxe's closed form"

    def setup(self) -> None:
        self.closed_form_conditions("Saxe's closed form")
        self.modes = []
        worst = 0.0
        for e, pieces in enumerate(self.pieces):
            tasks = sorted({task for _, task in pieces})
            _, _, a0, values, res = joint_basis(self.w0[e], [self.targets[t, e] for t in tasks])
            worst = max(worst, res)
            by_task = dict(zip(tasks, values))
            self.modes.append((np.abs(a0), [(self.lr * s, np.abs(by_task[task])) for s, task in pieces]))
        if worst > ALIGN_TOL:
            self.problems.append(
                f"the init and the targets do not share singular vectors (off-diagonal residual {worst:.2g} > "
                f"{ALIGN_TOL:g})"
            )
        self.check_balanced()

    def solve(self, steps: Sequence[int]) -> list[np.ndarray]:
        t = self.lr * np.asarray(steps, float)
        per_member = [
            saxe_piecewise(t, pieces, a0, time_constant=self.size**2, t0=self.lr * self.start_step)
            for a0, pieces in self.modes
        ]
        return list(self.top(np.stack(per_member, axis=1)))


class BraunReference(MatCompReference):
    """Exact depth-2 gradient flow from any balanced init (Braun et al. 2022; Fukumizu's Riccati solution).

    ``Q = [W1^T; W2]``, ``S = M`` of the current task, time ``tau = lr * step / N^2`` (the
    matrix-completion loss with every entry observed is ``1/(2 N^2) ||M - W||^2``); a switch restarts
    from the state at the switch with the new ``S``. Conditions: full observation, lambda-balanced init.
    :meth:`similarities` gives ``W``, ``W1^T W1`` and ``W2 W2^T`` (for the NTK, see :func:`cpl.theory.closed_form.ntk`).

    Example::

        >>> BraunReference(top_k=3).name
        'exact depth-2 dynamics (Braun et al.)'
    """

    name = "exact depth-2 dynamics (Braun et al.)"

    def setup(self) -> None:
        self.closed_form_conditions("the exact dynamics")
        self.lams, worst = [], 0.0
        for e in range(self.w0.shape[0]):
            lam, res = lambda_balance(self.factors[0][e], self.factors[1][e])
            self.lams.append(lam)
            worst = max(worst, res)
        if worst > BALANCE_TOL:
            self.problems.append(
                "the init is not lambda-balanced (relative residual of W2^T W2 - W1 W1^T = lambda I: "
                f"{worst:.2g} > {BALANCE_TOL:g})"
            )

    def similarities(self, steps: Sequence[int]) -> list[dict[str, np.ndarray]]:
        """Per member, ``{"w", "input_similarity", "output_similarity"}`` at the sorted ``steps``."""
        scale = self.lr / self.size**2
        out = []
        for e, pieces in enumerate(self.pieces):
            out.append(
                braun_trajectory(
                    self.factors[0][e],
                    self.factors[1][e],
                    [(scale * s, self.targets[task, e]) for s, task in pieces],
                    scale * np.asarray(steps, float),
                    lam=self.lams[e],
                    t0=scale * self.start_step,
                )
            )
        return out

    def solve(self, steps: Sequence[int]) -> list[np.ndarray]:
        ws = [traj["w"] for traj in self.similarities(steps)]
        return list(np.stack([self.top(np.linalg.svd(w, compute_uv=False)) for w in ws], axis=1))


REFERENCES = {"factorization": FactorizationReference, "saxe": SaxeReference, "braun": BraunReference}


def make_reference(kind: str, top_k: int = 10, every_n_steps: Optional[int] = None, **options: Any) -> MatCompReference:
    """The reference named ``kind`` (``factorization``, ``saxe`` or ``braun``).

    >>> make_reference("saxe", top_k=2).name
    "Saxe's closed form"
    """
    if kind not in REFERENCES:
        raise ValueError(f"Expected `kind` in {tuple(REFERENCES)}, got {kind!r}")
    cls = REFERENCES[kind]
    if cls is not FactorizationReference:
        options.pop("rtol", None)
        options.pop("atol", None)
    return cls(top_k=top_k, every_n_steps=every_n_steps, **options)
