"""How many CPUs this process may really use: its affinity mask, capped by a CPU quota.

``os.cpu_count()`` is the host's count: on a 64-core Kubernetes node a pod limited to 2 CPUs
would start 64 of anything sized from it. The affinity mask reflects a cpuset (``taskset``,
Docker's ``--cpuset-cpus``); a quota (Kubernetes ``limits.cpu``, Docker's ``--cpus``) only
shows in the cgroup's ``cpu.max`` (v2) or ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (v1).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

_CGROUP = Path("/sys/fs/cgroup")


def usable_cpus(cgroup_root: Path = _CGROUP) -> int:
    cpus = len(os.sched_getaffinity(0))
    quota = _cpu_quota(cgroup_root)
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return cpus


def _cpu_quota(root: Path) -> float | None:
    """CPUs' worth of time per period the cgroup allows, or None without a limit."""
    v2 = root / "cpu.max"
    try:
        if v2.exists():
            limit, period = v2.read_text().split()[:2]
            return None if limit == "max" else int(limit) / int(period)
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota <= 0 else quota / period
