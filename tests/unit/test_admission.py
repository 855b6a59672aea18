"""Clone admission: the machine probe on fake procfs/cgroupfs files, the slot rule, bursts of
concurrent admissions under a fake probe whose numbers the tests change, weights, the wait for
the reserves, and which clone is stopped when the machine runs short."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from diskaudit.audit.admission import (
    Admission,
    AdmissionConfig,
    MachineProbe,
    MachineReading,
    process_group_rss,
)

pytestmark = pytest.mark.anyio

MIB = 1024**2
GIB = 1024**3


# --- the probe ------------------------------------------------------------------------------


def fake_proc(tmp_path: Path, *, mem_available_kib: int | None, cgroup: str = "") -> Path:
    proc = tmp_path / "proc"
    (proc / "self").mkdir(parents=True)
    lines = ["MemTotal:       4000000 kB", "MemFree:         100000 kB"]
    if mem_available_kib is not None:
        lines.append(f"MemAvailable:   {mem_available_kib} kB")
    (proc / "meminfo").write_text("\n".join(lines) + "\n")
    (proc / "self" / "cgroup").write_text(cgroup)
    return proc


def cgroup_dir(root: Path, rel: str, files: dict[str, str]) -> None:
    d = root / rel
    d.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (d / name).write_text(text)


def test_meminfo_alone(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path, mem_available_kib=1000)
    probe = MachineProbe(str(tmp_path), proc=str(proc), cgroup_root=str(tmp_path / "nocgroup"))
    assert probe.memory_available() == 1000 * 1024


def test_cgroup_v2_limit_smaller_than_meminfo_counts_without_inactive_cache(
    tmp_path: Path,
) -> None:
    proc = fake_proc(tmp_path, mem_available_kib=4 * 1024 * 1024, cgroup="0::/svc/app\n")
    root = tmp_path / "cg"
    cgroup_dir(root, "", {"cgroup.controllers": "memory pids\n"})
    cgroup_dir(
        root,
        "svc/app",
        {
            "memory.max": f"{512 * MIB}\n",
            "memory.current": f"{300 * MIB}\n",
            "memory.stat": f"anon 1\ninactive_file {100 * MIB}\nactive_file 5\n",
        },
    )
    probe = MachineProbe(str(tmp_path), proc=str(proc), cgroup_root=str(root))
    assert probe.memory_available() == (512 - 200) * MIB


def test_cgroup_v2_limit_on_a_parent_and_none_on_the_own_group(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path, mem_available_kib=4 * 1024 * 1024, cgroup="0::/svc/app\n")
    root = tmp_path / "cg"
    cgroup_dir(root, "", {"cgroup.controllers": "memory\n"})
    cgroup_dir(root, "svc", {"memory.max": f"{400 * MIB}\n", "memory.current": f"{350 * MIB}\n"})
    cgroup_dir(root, "svc/app", {"memory.max": "max\n", "memory.current": f"{10 * MIB}\n"})
    probe = MachineProbe(str(tmp_path), proc=str(proc), cgroup_root=str(root))
    assert probe.memory_available() == 50 * MIB


def test_meminfo_smaller_than_the_cgroup_limit_wins(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path, mem_available_kib=1024, cgroup="0::/a\n")
    root = tmp_path / "cg"
    cgroup_dir(root, "", {"cgroup.controllers": "memory\n"})
    cgroup_dir(root, "a", {"memory.max": f"{GIB}\n", "memory.current": "0\n"})
    probe = MachineProbe(str(tmp_path), proc=str(proc), cgroup_root=str(root))
    assert probe.memory_available() == MIB


def test_cgroup_v1_limit_and_v1_unlimited(tmp_path: Path) -> None:
    proc = fake_proc(
        tmp_path, mem_available_kib=4 * 1024 * 1024, cgroup="5:cpu:/x\n4:memory:/grp\n0::/\n"
    )
    root = tmp_path / "cg"
    limit = {
        "memory.limit_in_bytes": f"{256 * MIB}\n",
        "memory.usage_in_bytes": f"{200 * MIB}\n",
        "memory.stat": f"cache 1\ntotal_inactive_file {40 * MIB}\n",
    }
    cgroup_dir(root, "memory/grp", limit)
    probe = MachineProbe(str(tmp_path), proc=str(proc), cgroup_root=str(root))
    assert probe.memory_available() == (256 - 160) * MIB
    unlimited = {"memory.limit_in_bytes": "9223372036854771712\n"}
    cgroup_dir(root, "memory/grp", {**limit, **unlimited})
    assert probe.memory_available() == 4 * GIB


def test_nothing_readable_is_unknown_and_disk_is_statvfs(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path, mem_available_kib=None)
    probe = MachineProbe(str(tmp_path), proc=str(proc), cgroup_root=str(tmp_path / "none"))
    reading = probe.read()
    assert reading.memory_available is None
    st = os.statvfs(tmp_path)
    assert reading.disk_free is not None
    assert abs(reading.disk_free - st.f_bavail * st.f_frsize) < 64 * MIB
    assert MachineProbe(str(tmp_path / "missing")).disk_free() is None


def test_the_real_machine_reads_something() -> None:
    reading = MachineProbe("/").read()
    assert reading.memory_available is not None
    assert reading.memory_available > 0
    assert reading.disk_free is not None


def test_process_group_rss_sums_the_group() -> None:
    code = "import time; b = bytearray(40 * 1024 * 1024); time.sleep(30)"
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    try:
        rss = 0
        for _ in range(200):
            rss = process_group_rss(proc.pid)
            if rss > 40 * MIB:
                break
            anyio_sleep_sync(0.02)
        assert rss > 40 * MIB
        assert process_group_rss(proc.pid) < 200 * MIB
    finally:
        proc.kill()
        proc.wait()
    assert process_group_rss(proc.pid) == 0


def anyio_sleep_sync(seconds: float) -> None:
    import time

    time.sleep(seconds)


# --- the rule ---------------------------------------------------------------------------------


class FakeProbe:
    """Reports whatever the test sets."""

    def __init__(self, memory: int | None, disk: int | None = 100 * GIB) -> None:
        self.memory = memory
        self.disk = disk
        self.reads = 0

    def read(self) -> MachineReading:
        self.reads += 1
        return MachineReading(self.memory, self.disk)


def admission(
    probe: FakeProbe | None,
    *,
    max_clones: int = 4,
    reserve: int = 256 * MIB,
    estimate: int = 128 * MIB,
    disk_reserve: int = GIB,
) -> Admission:
    cfg = AdmissionConfig(
        max_clones=max_clones,
        memory_reserve=reserve,
        memory_estimate=estimate,
        disk_reserve=disk_reserve,
        poll_s=0.02,
    )
    return Admission(anyio.CapacityLimiter(max_clones), cfg, probe)


@pytest.mark.parametrize(
    ("memory", "in_use", "slots"),
    [
        (10 * GIB, 0, 4),  # plentiful: capped at max
        (300 * MIB, 0, 1),  # under reserve + one estimate: never below 1
        (0, 0, 1),
        (600 * MIB, 0, 2),  # (600 - 256) // 128 = 2
        (600 * MIB, 1, 2),  # a slot taken, its estimate not seen yet: 1 + (600-128-256)//128
        (None, 0, 4),  # unknown memory: the configured maximum
    ],
)
def test_slots_follow_available_memory(memory: int | None, in_use: int, slots: int) -> None:
    adm = admission(FakeProbe(memory))
    assert adm.tokens_for(MachineReading(memory, GIB), in_use) == slots


def test_estimate_zero_keeps_the_maximum() -> None:
    adm = admission(FakeProbe(0), estimate=0)
    assert adm.tokens_for(MachineReading(0, GIB), 0) == 4


def test_weights_from_the_last_size() -> None:
    adm = admission(FakeProbe(GIB))
    assert adm.weight_for(None) == 1
    assert adm.weight_for(50 * MIB) == 1
    assert adm.weight_for(500 * MIB) == 2
    assert admission(FakeProbe(GIB), max_clones=1).weight_for(500 * MIB) == 1
    assert admission(FakeProbe(GIB), estimate=0).weight_for(500 * MIB) == 1


# --- bursts -----------------------------------------------------------------------------------


async def burst(
    adm: Admission,
    *,
    n: int = 6,
    hold_s: float = 0.15,
    during: Callable[[int], None] | None = None,
    weights: list[int] | None = None,
) -> tuple[int, list[int]]:
    """Run ``n`` concurrent admissions that each hold for ``hold_s``. Returns the peak number
    admitted at once and every token total seen (sampled every 5 ms). ``during(admitted)``
    is called at each admission."""
    active = 0
    peak = 0
    admitted = 0
    totals: list[int] = []

    async def one(weight: int) -> None:
        nonlocal active, peak, admitted
        async with adm.admit(weight):
            active += 1
            admitted += 1
            peak = max(peak, active)
            if during is not None:
                during(admitted)
            await anyio.sleep(hold_s)
            active -= 1

    async def sample() -> None:
        while True:
            totals.append(int(adm.limiter.total_tokens))
            await anyio.sleep(0.005)

    await adm.refresh()  # as the daemon's refresher does at start (before: max_clones)
    with anyio.fail_after(20):
        async with anyio.create_task_group() as watch:
            watch.start_soon(sample)
            async with anyio.create_task_group() as tg:
                for w in weights or [1] * n:
                    tg.start_soon(one, w)
            watch.cancel_scope.cancel()
    assert adm.limiter.borrowed_tokens == 0
    return peak, totals


async def test_burst_admits_max_when_memory_is_plentiful() -> None:
    peak, totals = await burst(admission(FakeProbe(10 * GIB)))
    assert peak == 4
    assert all(1 <= t <= 4 for t in totals)


async def test_burst_admits_one_at_a_time_when_memory_is_short() -> None:
    # Above the reserve (so clones may start) but not by one clone's estimate.
    peak, totals = await burst(admission(FakeProbe(300 * MIB)))
    assert peak == 1
    assert min(totals) == 1
    assert max(totals) == 1


async def test_burst_counts_estimates_of_clones_not_yet_grown() -> None:
    # 600 MiB fits two estimates above the reserve. The fake memory never goes down, so only
    # the pending estimates of the admitted clones keep the third one out.
    peak, totals = await burst(admission(FakeProbe(600 * MIB)))
    assert peak == 2
    assert all(1 <= t <= 2 for t in totals)


async def test_burst_admits_more_once_memory_frees_up() -> None:
    probe = FakeProbe(300 * MIB)

    def free_memory(admitted: int) -> None:
        if admitted == 2:
            probe.memory = 10 * GIB

    peak, totals = await burst(admission(probe), n=8, hold_s=0.2, during=free_memory)
    assert totals[0] == 1
    assert peak == 4
    assert all(1 <= t <= 4 for t in totals)


async def test_burst_admits_fewer_once_memory_gets_short() -> None:
    probe = FakeProbe(10 * GIB)
    after: list[int] = []
    adm = admission(probe)

    def squeeze(admitted: int) -> None:
        if admitted == 4:
            probe.memory = 300 * MIB
        if admitted > 4:
            after.append(adm.limiter.borrowed_tokens)

    peak, totals = await burst(adm, n=8, hold_s=0.1, during=squeeze)
    assert peak == 4
    assert after
    assert max(after) == 1  # once the first four are gone, one at a time
    assert all(1 <= t <= 4 for t in totals)


async def test_weight_two_takes_two_slots_and_a_weight_over_the_total_runs_alone() -> None:
    adm = admission(FakeProbe(10 * GIB))
    peak, _ = await burst(adm, weights=[2, 2, 1, 1])
    assert peak == 2  # in order: 2 + 2 fill the 4 slots
    peak, _ = await burst(adm, weights=[2, 1, 1, 1])
    assert peak == 3  # 2 + 1 + 1
    held: list[int] = []

    short = admission(FakeProbe(300 * MIB))
    await short.refresh()
    assert short.limiter.total_tokens == 1
    with anyio.fail_after(5):
        async with short.admit(2) as ticket:
            held.append(short.limiter.borrowed_tokens)
            assert ticket.weight == 2
    assert held == [1]
    assert short.limiter.borrowed_tokens == 0


async def test_two_weight_two_admissions_never_deadlock() -> None:
    adm = admission(FakeProbe(10 * GIB), max_clones=2)
    peak, _ = await burst(adm, weights=[2, 2, 2, 2], hold_s=0.05)
    assert peak == 1


# --- waiting for the reserves ---------------------------------------------------------------


async def test_short_memory_is_a_queue_until_it_frees_up() -> None:
    probe = FakeProbe(100 * MIB)  # under the 256 MiB reserve
    adm = admission(probe)
    entered = anyio.Event()

    async def audit() -> None:
        async with adm.admit():
            entered.set()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(audit)
            await anyio.sleep(0.2)
            assert not entered.is_set()
            assert adm.slots().waiting_for_resources == 1
            headroom = adm.slots().memory_headroom
            assert headroom is not None
            assert headroom < 0
            probe.memory = GIB
            await entered.wait()
    assert adm.slots().waiting_for_resources == 0
    assert adm.limiter.borrowed_tokens == 0


async def test_the_wait_ends_at_the_callers_deadline_and_gives_slots_back() -> None:
    adm = admission(FakeProbe(10 * GIB, disk=100 * MIB))  # under the 1 GiB disk reserve
    with pytest.raises(TimeoutError), anyio.fail_after(0.3):
        async with adm.admit(2):
            pytest.fail("admitted without the disk reserve")
    assert adm.limiter.borrowed_tokens == 0
    assert adm.slots().waiting_for_resources == 0
    assert adm.slots().waiting == 0


async def test_disk_needs_the_reserve_plus_the_last_size() -> None:
    adm = admission(FakeProbe(10 * GIB, disk=GIB + 10 * MIB))
    async with adm.admit(1, expected_bytes=5 * MIB):
        pass
    with pytest.raises(TimeoutError), anyio.fail_after(0.2):
        async with adm.admit(1, expected_bytes=20 * MIB):
            pass


async def test_a_slot_waiter_cancelled_leaves_nothing_held() -> None:
    adm = admission(FakeProbe(300 * MIB))  # one slot
    async with adm.admit():
        with anyio.move_on_after(0.1) as scope:
            async with adm.admit():
                pytest.fail("a second slot")
        assert scope.cancelled_caught
        assert adm.limiter.borrowed_tokens == 1
    assert adm.limiter.borrowed_tokens == 0


async def test_fixed_limiter_without_probe_never_changes() -> None:
    adm = Admission.fixed(anyio.CapacityLimiter(2))
    await adm.refresh()
    peak, totals = await burst(adm, hold_s=0.05)
    assert peak == 2
    assert set(totals) == {2}
    assert adm.slots().memory_headroom is None


# --- stopping a running clone -----------------------------------------------------------------


async def test_the_youngest_cloning_clone_is_stopped_when_memory_falls_under_half_the_reserve() -> (
    None
):
    probe = FakeProbe(10 * GIB)
    adm = admission(probe)
    async with adm.admit() as old, adm.admit() as young:
        assert await adm.check(old, rss=50 * MIB, disk_bytes=MIB) is None
        assert await adm.check(young, rss=60 * MIB, disk_bytes=MIB) is None
        probe.memory = 200 * MIB  # under the reserve, not under half of it
        await anyio.sleep(0.02)
        assert await adm.check(young, rss=60 * MIB, disk_bytes=MIB) is None
        probe.memory = 100 * MIB
        await anyio.sleep(0.02)
        assert await adm.check(old, rss=50 * MIB, disk_bytes=MIB) is None
        reason = await adm.check(young, rss=60 * MIB, disk_bytes=MIB)
        assert reason is not None
        assert "clone-memory-reserve" in reason
        assert "100 MiB left" in reason
        young.cloning = False  # its clone ended: the next one is the youngest cloning
        assert await adm.check(old, rss=50 * MIB, disk_bytes=MIB) is not None
    assert dict(adm.slots().stopped) == {"memory": 2}


async def test_a_clone_is_stopped_when_disk_falls_under_half_the_reserve() -> None:
    probe = FakeProbe(10 * GIB, disk=10 * GIB)
    adm = admission(probe)
    async with adm.admit() as ticket:
        probe.disk = 400 * MIB
        await anyio.sleep(0.02)
        reason = await adm.check(ticket, rss=0, disk_bytes=300 * MIB)
    assert reason is not None
    assert "clone-disk-reserve" in reason


async def test_seen_memory_lowers_what_is_pending() -> None:
    adm = admission(FakeProbe(10 * GIB))
    async with adm.admit(2) as ticket:
        assert adm.pending_memory() == 256 * MIB
        await adm.check(ticket, rss=100 * MIB, disk_bytes=0)
        assert adm.pending_memory() == 156 * MIB
        await adm.check(ticket, rss=10 * MIB, disk_bytes=0)  # the peak counts
        assert adm.pending_memory() == 156 * MIB
    assert adm.pending_memory() == 0
