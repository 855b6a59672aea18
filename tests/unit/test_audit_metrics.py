"""The audit collector: limiter gauges, finished audits, per-repository figures."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from diskaudit.audit.model import AuditResult, DiskFigures
from diskaudit.audit.service import CloneSlots
from diskaudit.audit.sizer import SizerReport
from diskaudit.audit.state import AuditState
from diskaudit.metrics.audit import AuditCollector

URL = "https://git.example.org/team/repo.git"


def result(clone_seconds: float = 3.0) -> AuditResult:
    return AuditResult(
        url=URL,
        ref=None,
        head="0" * 40,
        clone_seconds=clone_seconds,
        scan_seconds=0.1,
        sizer_seconds=0.2,
        disk=DiskFigures(
            pack_bytes=1000,
            packs=1,
            loose_objects=2,
            loose_bytes=30,
            git_dir_disk_bytes=4096,
            worktree_disk_bytes=8192,
            worktree_apparent_bytes=100,
            worktree_files=3,
        ),
        sizer=SizerReport(commit_count=7, blob_count=5, blob_size=123, max_blob_size=20_000_000),
    )


def registry(state: AuditState, slots: CloneSlots) -> CollectorRegistry:
    reg = CollectorRegistry()
    reg.register(AuditCollector(state, lambda: slots))
    return reg


def test_limiter_and_finished_audits() -> None:
    state = AuditState()
    state.record_success(result(clone_seconds=3.0))
    state.record_end("timed_out")
    state.record_end("timed_out")
    reg = registry(state, CloneSlots(total=2, in_use=1, waiting=4))
    assert reg.get_sample_value("diskaudit_clone_slots") == 2
    assert reg.get_sample_value("diskaudit_clones_in_progress") == 1
    assert reg.get_sample_value("diskaudit_clones_waiting") == 4
    assert reg.get_sample_value("diskaudit_audits_total", {"status": "succeeded"}) == 1
    assert reg.get_sample_value("diskaudit_audits_total", {"status": "timed_out"}) == 2
    assert reg.get_sample_value("diskaudit_clone_duration_seconds_bucket", {"le": "1.0"}) == 0
    assert reg.get_sample_value("diskaudit_clone_duration_seconds_bucket", {"le": "5.0"}) == 1
    assert reg.get_sample_value("diskaudit_clone_duration_seconds_count") == 1
    assert reg.get_sample_value("diskaudit_clone_duration_seconds_sum") == 3.0


def test_per_repository_figures_and_levels_of_concern() -> None:
    state = AuditState()
    state.record_success(result())
    reg = registry(state, CloneSlots(2, 0, 0))
    repo = {"repo": URL}
    assert reg.get_sample_value("diskaudit_repo_pack_bytes", repo) == 1000
    assert reg.get_sample_value("diskaudit_repo_worktree_bytes", repo) == 8192
    assert reg.get_sample_value("diskaudit_repo_objects", {**repo, "type": "commit"}) == 7
    assert (
        reg.get_sample_value("diskaudit_repo_objects_size_bytes", {**repo, "type": "blob"}) == 123
    )
    # git-sizer's scale for the biggest blob is 10 MB: 20 MB is level 2 ("**").
    level = {**repo, "metric": "max_blob_size"}
    assert reg.get_sample_value("diskaudit_repo_concern_level", level) == 2.0
    assert reg.get_sample_value("diskaudit_repo_sizer_value", level) == 20_000_000
    state.forget(URL)
    assert reg.get_sample_value("diskaudit_repo_pack_bytes", repo) is None  # no stale series


def test_admission_gauges_and_stopped_clones() -> None:
    slots = CloneSlots(
        total=3,
        in_use=2,
        waiting=1,
        waiting_for_resources=1,
        memory_headroom=-5 * 1024**2,
        disk_headroom=7 * 1024**3,
        stopped=(("max_repo_bytes", 2), ("memory", 1)),
    )
    reg = registry(AuditState(), slots)
    assert reg.get_sample_value("diskaudit_clone_slots") == 3
    assert reg.get_sample_value("diskaudit_clone_admissions_waiting") == 1
    assert reg.get_sample_value("diskaudit_clone_memory_headroom_bytes") == -5 * 1024**2
    assert reg.get_sample_value("diskaudit_clone_disk_headroom_bytes") == 7 * 1024**3
    assert reg.get_sample_value("diskaudit_clones_stopped_total", {"reason": "memory"}) == 1
    assert reg.get_sample_value("diskaudit_clones_stopped_total", {"reason": "max_repo_bytes"}) == 2


def test_headroom_is_absent_when_not_measured() -> None:
    reg = registry(AuditState(), CloneSlots(total=2, in_use=0, waiting=0))
    assert reg.get_sample_value("diskaudit_clone_memory_headroom_bytes") is None
    assert reg.get_sample_value("diskaudit_clone_disk_headroom_bytes") is None
    assert reg.get_sample_value("diskaudit_clone_admissions_waiting") == 0


def test_last_size_is_git_dir_plus_worktree_of_the_latest_audit() -> None:
    state = AuditState()
    assert state.last_size(URL) is None
    state.record_success(result())
    assert state.last_size(URL) == 4096 + 8192
    state.forget(URL)
    assert state.last_size(URL) is None
