"""The CPU count sizing --frontend_processes: affinity capped by a cgroup CPU quota."""

from __future__ import annotations

import os

from serving.options import ServerOptions
from serving.usable_cpus import usable_cpus

AFFINITY = len(os.sched_getaffinity(0))


def test_no_cgroup_files_means_the_affinity_mask(tmp_path):
    assert usable_cpus(tmp_path) == AFFINITY


def test_cgroup_v2_quota_caps_and_rounds_up(tmp_path):
    (tmp_path / "cpu.max").write_text("50000 100000\n")  # half a CPU: still one
    assert usable_cpus(tmp_path) == 1
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert usable_cpus(tmp_path) == AFFINITY
    (tmp_path / "cpu.max").write_text(f"{100000 * (AFFINITY + 5)} 100000\n")  # above: affinity
    assert usable_cpus(tmp_path) == AFFINITY


def test_cgroup_v1_quota(tmp_path):
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert usable_cpus(tmp_path) == AFFINITY
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")
    assert usable_cpus(tmp_path) == 1


def test_explicit_frontend_count_wins_and_auto_is_bounded():
    assert ServerOptions(frontend_processes=3).frontend_count() == 3
    assert ServerOptions(frontend_processes=0).frontend_count() == 0
    auto = ServerOptions().frontend_count()
    assert auto == (0 if usable_cpus() < 2 else min(usable_cpus(), 8))
