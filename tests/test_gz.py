"""pipeline.reads.gz: the reads' gzip, checked against Python's own gzip and the system's gzip."""

import gzip
import shutil
import subprocess

import pytest

from pipeline.reads import gz
from pipeline.reads.fastq import FastqError, count_fastq_records, mates_agree

READS = b"".join(b"@r%d\nACGTACGTAC\n+\nIIIIIIIIII\n" % i for i in range(20_000))


def test_what_it_writes_is_standard_gzip_with_the_same_bytes_each_time(tmp_path):
    a, b = tmp_path / "a.fastq.gz", tmp_path / "b.fastq.gz"
    for p in (a, b):
        with gz.open_write(p) as out:
            out.write(READS)
    assert a.read_bytes() == b.read_bytes()  # no name, mtime 0
    assert gzip.decompress(a.read_bytes()) == READS
    if shutil.which("gzip"):
        assert subprocess.run(["gzip", "-t", str(a)]).returncode == 0
    with gz.open_read(a) as fh:
        assert fh.read() == READS


def test_it_reads_what_pythons_gzip_wrote_and_plain_files(tmp_path):
    z = tmp_path / "z.fastq.gz"
    z.write_bytes(gzip.compress(READS, 6))
    plain = tmp_path / "p.fastq"
    plain.write_bytes(READS)
    assert count_fastq_records(z) == count_fastq_records(plain) == 20_000


def test_a_truncated_or_corrupt_stream_is_a_fastq_error_naming_the_file(tmp_path):
    data = gzip.compress(READS, 6)
    cut = tmp_path / "cut.fastq.gz"
    cut.write_bytes(data[: len(data) // 2])
    bad = tmp_path / "bad.fastq.gz"
    bad.write_bytes(data[:200] + bytes(b ^ 0xFF for b in data[200:260]) + data[260:])
    for p in (cut, bad):
        with pytest.raises(FastqError, match=p.name):
            count_fastq_records(p)
        with pytest.raises(gz.READ_ERRORS):
            with gz.open_read(p) as fh:
                while fh.read(1 << 16):
                    pass


def test_mates_must_agree():
    assert mates_agree([7]) == 7 and mates_agree([7, 7]) == 7
    with pytest.raises(FastqError, match="mates differ in read count: 7 vs 6"):
        mates_agree([7, 6])
