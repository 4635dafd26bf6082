"""Each machine's caps (pipeline.hostcap): shared by forked worker processes, a claim taken whole."""

from __future__ import annotations

import multiprocessing
import time

from pipeline.fetch.sources import archive_hosts
from pipeline.hostcap import HostCaps
from pipeline.model import RemoteFile, Run


def _hold(caps: HostCaps, claim: dict, log, seconds: float = 0.3) -> None:
    with caps.hold(claim):
        log.put((time.monotonic(), "in"))
        time.sleep(seconds)
        log.put((time.monotonic(), "out"))


def _most_at_once(caps: HostCaps, claims: list[dict]) -> int:
    ctx = multiprocessing.get_context("fork")  # as Luigi's worker processes are made
    log = ctx.Queue()
    procs = [ctx.Process(target=_hold, args=(caps, c, log)) for c in claims]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    events = sorted(log.get(timeout=5) for _ in range(2 * len(claims)))
    level = peak = 0
    for _, what in events:
        level += 1 if what == "in" else -1
        peak = max(peak, level)
    return peak


def test_forked_processes_share_the_machine_cap():
    assert _most_at_once(HostCaps({"cpu": 1}), [{"cpu": 1}] * 3) == 1
    assert _most_at_once(HostCaps({"cpu": 2}), [{"cpu": 1}] * 4) == 2
    # a claim of 2 of 2 runs alone; names the machine does not cap are free
    assert _most_at_once(HostCaps({"cpu": 2}), [{"cpu": 2}, {"cpu": 1}, {"cpu": 1}]) <= 2
    assert _most_at_once(HostCaps({"cpu": 1}), [{"other": 5}] * 3) == 3


def test_a_claim_is_cut_to_the_cap_and_to_known_names():
    caps = HostCaps({"cpu": 4, "download": 2})
    assert caps.claim({"cpu": 8, "download": 1, "gpu": 1}) == {"cpu": 4, "download": 1}
    assert caps.claim({"cpu": 0}) == {}
    waited = []
    with caps.hold({"download": 2}):
        pass
    with caps.hold({"cpu": 4}, waiting=waited.append):
        pass
    assert waited == [], "free units were waited for"


def test_archive_hosts_of_a_batch_follow_sources_and_mirrors():
    run = Run(
        run="SRR1",
        files=[RemoteFile(url="https://ftp.sra.ebi.ac.uk/vol1/fastq/SRR1_1.fastq.gz", name="SRR1_1.fastq.gz")],
        sra_urls=["https://sra-pub-run-odp.s3.amazonaws.com/sra/SRR1/SRR1"],
    )
    local = Run(run="SRR2", files=[RemoteFile(url="file:///data/x.fastq.gz", name="x.fastq.gz")])
    assert archive_hosts([run, local], ["ena", "sra"]) == ["ftp.sra.ebi.ac.uk", "sra-pub-run-odp.s3.amazonaws.com"]
    assert archive_hosts([run], ["ena"]) == ["ftp.sra.ebi.ac.uk"]
    mirrors = {"https://ftp.sra.ebi.ac.uk/": "http://127.0.0.1:9999/"}
    assert archive_hosts([run], ["ena"], mirrors) == ["127.0.0.1:9999"]
