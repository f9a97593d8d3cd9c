"""Members with their own windows of steps, and the members active at a step (a LightningModule mixin)."""

from __future__ import annotations

from typing import Optional, Sequence

import torch

__all__ = ["MemberWindows"]


class MemberWindows:
    """Member schedule of a module whose parameters carry a leading member dimension E.

    Without a schedule every member trains at every step. With :meth:`set_member_schedule` member
    e trains over ``[start_e, end_e)`` only, and may take a copy of a source member's parameters
    at its start (a shared pre-training trunk, :class:`cpl.core.members.MemberSchedule`).
    Expects ``self.parameters()``, ``self.device`` and ``self._last_step`` (the run's final step).
    """

    member_starts: Optional[list[int]] = None
    member_ends: Optional[list[int]] = None
    member_sources: Optional[list[Optional[int]]] = None
    #: members updated at this step: a slice (contiguous) or an index tensor
    active: slice | torch.Tensor = slice(None)
    _active_key: Optional[tuple[int, ...]] = None

    @property
    def n_members(self) -> int:
        return next(iter(self.parameters())).shape[0]

    def set_member_schedule(
        self, starts: Sequence[int], ends: Sequence[int], sources: Sequence[Optional[int]] | None = None
    ) -> None:
        """Give each member its own window of steps ``[start, end)``.

        A member is updated only inside its window; its last weights (and final metrics) are
        those at step ``end``. At step ``start`` a member with a ``source`` takes a copy of the
        source member's parameters: the source must be active then, so that members sharing a
        trajectory up to ``start`` (a pre-training trunk) compute it only once.
        """
        n = self.n_members
        sources = [None] * n if sources is None else list(sources)
        if not (len(starts) == len(ends) == len(sources) == n):
            raise ValueError(
                f"Expected one start, end and source per member ({n}), got {len(starts)}, {len(ends)}, {len(sources)}"
            )
        for e, (a, b, src) in enumerate(zip(starts, ends, sources)):
            if not 0 <= a <= b:
                raise ValueError(f"Expected 0 <= start <= end for member {e}, got start={a}, end={b}")
            if src is not None and not (0 <= src < n and src != e and starts[src] <= a < ends[src]):
                raise ValueError(f"Member {e} starts at step {a} from member {src}, which is not active then")
        self.member_starts, self.member_ends, self.member_sources = list(starts), list(ends), sources
        self._active_key = None
        self._copy_sources(0)

    def active_members(self, step: int) -> list[int]:
        """Members that take the gradient step ``step`` (0-based)."""
        if self.member_starts is None:
            return list(range(self.n_members))
        return [e for e in range(self.n_members) if self.member_starts[e] <= step < self.member_ends[e]]

    def members_to_log(self, step: int, every_n_steps: int) -> list[int]:
        """Members whose state after ``step`` updates is logged by a logger with that interval:
        on the interval inside their window, and always at the end of their window."""
        last = step >= self._last_step
        if step % every_n_steps and not last and (self.member_ends is None or step not in self.member_ends):
            return []
        if self.member_starts is None:
            return list(range(self.n_members)) if step % every_n_steps == 0 or last else []
        return [
            e
            for e in range(self.n_members)
            if self.member_starts[e] <= step <= self.member_ends[e]
            and (step % every_n_steps == 0 or step == self.member_ends[e])
        ]

    def _copy_sources(self, step: int) -> None:
        """Members starting at ``step`` take their source's parameters (the state after ``step`` updates)."""
        with torch.no_grad():
            for e, src in enumerate(self.member_sources):
                if src is not None and self.member_starts[e] == step:
                    for p in self.parameters():
                        p[e].copy_(p[src])

    def member_index(self, members: Sequence[int] | None) -> slice | torch.Tensor:
        """Index of the given members along the member dimension: a slice when they are all
        (None) or contiguous (views, no gather), else an index tensor on the module's device."""
        if members is None:
            return slice(None)
        members = list(members)
        if members and members == list(range(members[0], members[-1] + 1)):
            return slice(members[0], members[-1] + 1)
        return torch.tensor(members, dtype=torch.long, device=self.device)

    def _select(self, step: int) -> None:
        members = tuple(self.active_members(step))
        if members != self._active_key:
            self._active_key = members
            self.active = self.member_index(members)
