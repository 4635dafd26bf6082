"""Free-space guard and disk measurement. Nothing here writes more than a few hundred KiB: a
shortage is simulated with a huge ``need``/``min_free``, a ``free`` override or a ``limit``."""

from __future__ import annotations

import os
import shutil
import threading
import time

import pytest

from pipeline.plan.sizes import human
from pipeline.plan.space import DiskSpaceError, available_bytes, check_space, free_bytes, tree_bytes, wait_for_space
from pipeline.testing.disk_sampler import DiskSampler

KiB = 1024


def write(path, n: int):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * n)
    return path


@pytest.mark.parametrize(
    "n, text",
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (1536, "1.5 KiB"),
        (3 * 2**29, "1.5 GiB"),
        (40 * 2**30, "40.0 GiB"),
        (2**40, "1.0 TiB"),
        (-2048, "-2.0 KiB"),
    ],
)
def test_human(n, text):
    assert human(n) == text


def test_free_bytes_of_a_path_not_yet_made(tmp_path):
    deep = tmp_path / "a" / "b" / "c"
    assert not deep.exists()
    f = free_bytes(deep)
    assert f > 0 and abs(f - shutil.disk_usage(tmp_path).free) < 64 * 2**20  # same file system
    assert not deep.exists()  # measuring creates nothing


def test_tree_bytes(tmp_path):
    assert tree_bytes(tmp_path / "absent") == 0
    assert tree_bytes(tmp_path) == 0
    write(tmp_path / "a.bin", 1000)
    write(tmp_path / "d" / "e" / "b.bin", 234)
    (tmp_path / "d" / "empty").mkdir()
    os.symlink(tmp_path / "a.bin", tmp_path / "link")  # not followed, not counted
    assert tree_bytes(tmp_path) == 1234
    assert tree_bytes(tmp_path / "a.bin") == 1000
    assert tree_bytes(tmp_path / "link") == 0


def test_check_space_passes_for_a_small_need(tmp_path):
    avail = check_space(tmp_path, need=KiB, min_free=KiB)
    assert avail > 2 * KiB


def test_check_space_fails_for_a_huge_need_naming_path_and_sizes(tmp_path):
    target = tmp_path / "fastq"
    need = free_bytes(tmp_path) + 2**30
    with pytest.raises(DiskSpaceError) as e:
        check_space(target, need=need, min_free=10 * 2**30)
    msg = str(e.value)
    assert msg.startswith("batch needs ")
    assert str(target) in msg and human(need) in msg and "(+ 10.0 GiB margin)" in msg and "is free" in msg
    assert e.value.need == need and e.value.min_free == 10 * 2**30 and e.value.path == target


def test_check_space_fails_through_min_free(tmp_path):
    """A margin larger than the disk cannot be met, however small the batch."""
    margin = shutil.disk_usage(tmp_path).total + 1
    with pytest.raises(DiskSpaceError, match=r"needs 1 B \(\+ .* margin\)"):
        check_space(tmp_path, need=1, min_free=margin)


def test_check_space_message_names_what_where_and_how_much(tmp_path):
    assert check_space(tmp_path, need=600, min_free=400, limit=1000) == 1000
    with pytest.raises(DiskSpaceError) as e:
        check_space(tmp_path, need=600, min_free=401, limit=1000, what="batch 7 of Testus")
    assert str(e.value).startswith(
        f"batch 7 of Testus needs 600 B (+ 401 B margin) under {tmp_path} "
        "but only 1000 B is free (disk_limit 1000 B with 0 B already used"
    )
    with pytest.raises(ValueError):
        check_space(tmp_path, need=-1)


def test_available_bytes_with_a_limit(tmp_path):
    root = tmp_path / "out"
    write(root / "sp1" / "fastq" / "SRR1" / "SRR1_1.fastq.gz", 30 * KiB)
    write(root / "sp2" / "quant" / "SRR2" / "abundance.tsv", 10 * KiB)
    assert available_bytes(root) == free_bytes(root)
    assert available_bytes(root, limit=100 * KiB) == 60 * KiB
    # the budget may count a wider tree than the folder being written
    assert available_bytes(root / "sp1" / "fastq", limit=100 * KiB, used_root=root) == 60 * KiB
    assert available_bytes(root / "sp1" / "fastq", limit=100 * KiB) == 70 * KiB
    assert available_bytes(root, limit=20 * KiB) == 0  # over budget already: never negative
    assert available_bytes(root, limit=free_bytes(root) * 4) <= free_bytes(root) + 2**20  # disk is the cap


def test_check_space_under_a_limit_explains_the_budget(tmp_path):
    write(tmp_path / "old.fastq.gz", 70 * KiB)
    check_space(tmp_path, need=20 * KiB, min_free=10 * KiB, limit=100 * KiB)  # exactly fits
    with pytest.raises(DiskSpaceError) as e:
        check_space(tmp_path, need=20 * KiB, min_free=10 * KiB + 1, limit=100 * KiB)
    msg = str(e.value)
    assert "needs 20.0 KiB" in msg and "only 30.0 KiB is free" in msg
    assert "disk_limit 100.0 KiB" in msg and f"70.0 KiB already used under {tmp_path}" in msg


def test_wait_for_space_returns_once_a_cleanup_frees_room(tmp_path):
    old = write(tmp_path / "batch0" / "SRR1.fastq.gz", 80 * KiB)
    messages = []

    def cleanup():
        time.sleep(0.3)
        old.unlink()

    t = threading.Thread(target=cleanup)
    t.start()
    try:
        t0 = time.monotonic()
        avail = wait_for_space(
            tmp_path, need=50 * KiB, min_free=0, timeout_s=20, poll_s=0.05, log=messages.append, limit=100 * KiB
        )
        waited = time.monotonic() - t0
    finally:
        t.join()
    assert avail == 100 * KiB and 0.2 < waited < 10
    assert messages[0].startswith("waiting for disk space (up to 20 s): batch needs 50.0 KiB")
    assert messages[-1].startswith("disk space: 100.0 KiB free under")


def test_wait_for_space_times_out(tmp_path):
    write(tmp_path / "f", 90 * KiB)
    with pytest.raises(DiskSpaceError, match=r"only 10.0 KiB is free.*gave up after waiting"):
        wait_for_space(tmp_path, need=50 * KiB, min_free=0, timeout_s=0.2, poll_s=0.05, limit=100 * KiB)
    with pytest.raises(DiskSpaceError) as e:  # timeout 0: one check, the plain message
        wait_for_space(tmp_path, need=50 * KiB, min_free=0, timeout_s=0, limit=100 * KiB)
    assert "gave up" not in str(e.value)


def test_wait_for_space_gives_up_at_once_when_it_can_never_fit(tmp_path):
    slept = []
    with pytest.raises(DiskSpaceError, match="more than the disk_limit of 100.0 KiB: it can never fit"):
        wait_for_space(tmp_path, need=90 * KiB, min_free=20 * KiB, timeout_s=3600, limit=100 * KiB, sleep=slept.append)
    with pytest.raises(DiskSpaceError, match="file system size"):
        wait_for_space(tmp_path, need=shutil.disk_usage(tmp_path).total + 1, timeout_s=3600, sleep=slept.append)
    assert slept == []


def test_wait_for_space_logs_with_a_fake_clock(tmp_path):
    now = [0.0]
    said = []

    class Log:  # a RunLog-like object
        def write(self, m):
            said.append((now[0], m))

    def sleep(s):
        now[0] += s

    write(tmp_path / "f", 90 * KiB)
    with pytest.raises(DiskSpaceError):
        wait_for_space(
            tmp_path,
            need=50 * KiB,
            min_free=0,
            timeout_s=300,
            poll_s=10,
            log=Log(),
            limit=100 * KiB,
            sleep=sleep,
            clock=lambda: now[0],
        )
    assert [t for t, _ in said] == [0.0, 60.0, 120.0, 180.0, 240.0]  # once a minute, not every poll
    assert now[0] == 300.0


def test_disk_sampler_sees_the_peak_of_files_written_then_deleted(tmp_path):
    work = tmp_path / "fastq"
    with DiskSampler(work, interval=0.01) as s:
        for batch in range(3):
            files = [write(work / f"b{batch}" / f"SRR{i}.fastq.gz", 64 * KiB) for i in range(4)]
            time.sleep(0.1)  # 256 KiB on disk for a while
            for f in files:
                f.unlink()
            time.sleep(0.05)
    assert s.peak == 256 * KiB
    assert s.samples[0][1] == 0 and s.samples[-1][1] == 0
    assert len(s.samples) > 10
    times = [t for t, _ in s.samples]
    assert times == sorted(times) and 0 < s.peak_at < times[-1]
    assert tree_bytes(work) == 0


def test_disk_sampler_sums_several_paths(tmp_path):
    write(tmp_path / "a" / "x", 100)
    write(tmp_path / "b" / "y", 50)
    with DiskSampler([tmp_path / "a", tmp_path / "b", tmp_path / "absent"], interval=0.5) as s:
        assert s.sample() == 150
    assert s.peak == 150 and len(s.samples) >= 3
    with pytest.raises(ValueError):
        DiskSampler(tmp_path, interval=0)
