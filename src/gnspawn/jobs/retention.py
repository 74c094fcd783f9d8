"""Which snapshots of a machine retention keeps, and why."""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from gnspawn.zfs import Snapshot


class Verdict(NamedTuple):
    snapshot: Snapshot
    keep: bool
    reason: str


def plan(snapshots: list[Snapshot], keep: int, needed: Mapping[str, int]) -> list[Verdict]:
    """Each snapshot (oldest first) with whether it stays.

    gnspawn snapshots beyond the newest `keep` go, oldest first; never a kept one
    (org.gnspawn:keep), never the newest one a host it was sent to has
    (org.gnspawn:sent: the next send to it starts from there), never the admin's own
    (no org.gnspawn:job), never one a waiting or running job needs (`needed` maps
    full snapshot names to job ids), never the newest.
    """
    ours = [s for s in snapshots if s.job is not None]
    recent = {s.full_name for s in ours[-keep:]} if keep > 0 else set()
    newest = ours[-1].full_name if ours else ""
    verdicts = []
    for snap in snapshots:
        name = snap.full_name
        if snap.kept:
            verdicts.append(
                Verdict(snap, True, f"pinned (tag {snap.tag})" if snap.tag else "pinned")
            )
        elif snap.sent:
            verdicts.append(Verdict(snap, True, f"the newest one {' and '.join(snap.sent_to)} has"))
        elif snap.job is None:
            verdicts.append(Verdict(snap, True, "not gnspawn's (no org.gnspawn:job property)"))
        elif name in needed:
            verdicts.append(Verdict(snap, True, f"needed by job {needed[name]}"))
        elif name == newest:
            verdicts.append(Verdict(snap, True, "newest"))
        elif name in recent:
            verdicts.append(Verdict(snap, True, f"one of the newest {keep} (keep_snapshots)"))
        else:
            verdicts.append(Verdict(snap, False, f"older than the newest {keep} (keep_snapshots)"))
    return verdicts
