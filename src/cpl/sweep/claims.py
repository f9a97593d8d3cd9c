"""Atomic cell claims: two workers on the same sweep split its cells instead of training each twice.

Before a cell trains, its worker claims it: under the store's lock
(:func:`cpl.tracking.store.store_lock`) it checks that no live worker holds the cell and that no
FINISHED child has its hash, then sets the parent run's tag ``cpl.claim.<cell hash>`` to
``host:pid``. The claim is released once the cell's run ended (FINISHED or FAILED). A claim whose
process is gone (same host) is stale and taken over. Without a lock (a remote tracking server)
the claim is set, then read back: the last writer wins and the other skips the cell.
"""

from __future__ import annotations

import os
import socket
from typing import Optional

from .. import tracking

__all__ = ["owner", "claim", "release", "holder_alive", "claim_key"]


def owner() -> str:
    """This process as a claim holder: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def claim_key(cell_hash: str) -> str:
    return f"cpl.claim.{cell_hash}"


def holder_alive(holder: Optional[str]) -> bool:
    """Whether a claim's process still runs (on another host: assumed so)."""
    if not holder:
        return False
    host, _, pid = holder.rpartition(":")
    if host != socket.gethostname():
        return True
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def _finished(client, experiment_id: str, parent_run_id: str, cell_hash: str) -> bool:
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}' and tags.`cpl.sweep.cell_hash` = '{cell_hash}' "
        "and attributes.status = 'FINISHED'",
        max_results=1,
    )
    return bool(runs)


def claim(client, parent_run_id: str, cell_hash: str) -> bool:
    """Claim a cell for this process; False if a live worker holds it or it already FINISHED."""
    me, key = owner(), claim_key(cell_hash)
    with tracking.store_lock(client.tracking_uri):
        parent = client.get_run(parent_run_id)
        holder = parent.data.tags.get(key)
        if holder and holder != me and holder_alive(holder):
            return False
        if _finished(client, parent.info.experiment_id, parent_run_id, cell_hash):
            return False
        tracking.set_tags(client, parent_run_id, {key: me})
    return client.get_run(parent_run_id).data.tags.get(key) == me


def release(client, parent_run_id: str, cell_hash: str) -> None:
    """Give a claim back (the cell's run has ended)."""
    try:
        with tracking.store_lock(client.tracking_uri):
            if client.get_run(parent_run_id).data.tags.get(claim_key(cell_hash)) == owner():
                client.delete_tag(parent_run_id, claim_key(cell_hash))
    except Exception:  # noqa: BLE001 - a stale claim is taken over once this process is gone
        pass
