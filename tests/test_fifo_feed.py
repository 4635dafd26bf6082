"""pipeline.reads.fastq.feed_fastq and pipeline.fifo: a FASTQ decompressed into a FIFO that another
process reads, counted to its end whatever the reader does. Readers are real processes."""

import fcntl
import gzip
import os
import subprocess
import threading

import pytest

from pipeline import fifo
from pipeline.reads.fastq import FastqError, FifoSink, count_fastq_records, feed_fastq

READS = b"".join(b"@r%d\nACGTACGTACGTACGTACGT\n+\nIIIIIIIIIIIIIIIIIIII\n" % i for i in range(60_000))


def _gz(tmp_path, data=READS, name="r.fastq.gz"):
    p = tmp_path / name
    p.write_bytes(gzip.compress(data, 1))
    return p


def _reader(argv, fifo_path, out):
    with open(out, "wb") as fh:
        return subprocess.Popen([*argv, str(fifo_path)], stdout=fh)


def test_the_reader_gets_the_decompressed_bytes_and_the_count_is_exact(tmp_path):
    src, pipe, out = _gz(tmp_path), tmp_path / "p.fastq", tmp_path / "out"
    os.mkfifo(pipe)
    proc = _reader(["cat"], pipe, out)
    assert feed_fastq(src, pipe, lambda: proc.poll() is None) == 60_000
    assert proc.wait() == 0
    assert out.read_bytes() == READS


def test_a_reader_that_stops_early_only_ends_the_writing(tmp_path):
    # head exits after 1000 bytes: the feeder's next write gets EPIPE, and the file is still counted
    src, pipe, out = _gz(tmp_path), tmp_path / "p.fastq", tmp_path / "out"
    os.mkfifo(pipe)
    proc = _reader(["head", "-c", "1000"], pipe, out)
    assert feed_fastq(src, pipe, lambda: proc.poll() is None) == count_fastq_records(src) == 60_000
    proc.wait()
    assert out.read_bytes() == READS[:1000]


def test_a_reader_that_never_opens_the_fifo_does_not_block_the_feeder(tmp_path):
    src, pipe = _gz(tmp_path), tmp_path / "p.fastq"
    os.mkfifo(pipe)
    done = []
    t = threading.Thread(target=lambda: done.append(feed_fastq(src, pipe, lambda: False)), daemon=True)
    t.start()
    t.join(30)
    assert done == [60_000]


def test_a_truncated_file_fails_and_the_reader_sees_the_end_of_the_stream(tmp_path):
    data = gzip.compress(READS, 1)
    cut = tmp_path / "cut.fastq.gz"
    cut.write_bytes(data[: len(data) // 2])
    pipe, out = tmp_path / "p.fastq", tmp_path / "out"
    os.mkfifo(pipe)
    proc = _reader(["cat"], pipe, out)
    with pytest.raises(FastqError, match="cut.fastq.gz"):
        feed_fastq(cut, pipe, lambda: proc.poll() is None)
    assert proc.wait(timeout=30) == 0  # EOF, not a reader left waiting
    assert 0 < len(out.read_bytes()) < len(READS)
    assert READS.startswith(out.read_bytes())


@pytest.mark.parametrize("content", [b"", b"not gzip at all"], ids=["empty", "unreadable"])
def test_an_empty_or_unreadable_file_still_lets_the_reader_open_and_finish(tmp_path, content):
    src = tmp_path / "r.fastq.gz"
    src.write_bytes(gzip.compress(content) if not content else content)
    pipe, out = tmp_path / "p.fastq", tmp_path / "out"
    os.mkfifo(pipe)
    proc = _reader(["cat"], pipe, out)
    if content:
        with pytest.raises(FastqError):
            feed_fastq(src, pipe, lambda: proc.poll() is None)
    else:
        assert feed_fastq(src, pipe, lambda: proc.poll() is None) == 0
    assert proc.wait(timeout=30) == 0
    assert out.read_bytes() == b""


def test_a_fed_fifo_gets_the_larger_pipe_buffer(tmp_path):
    """A 64 KiB pipe stalls kallisto (docs/measurements.md): the feeder enlarges its FIFO."""
    limit = int(open("/proc/sys/fs/pipe-max-size").read())
    if fifo.PIPE_BYTES > limit and os.geteuid() != 0:
        pytest.skip(f"the kernel's pipe-max-size ({limit}) is below {fifo.PIPE_BYTES} for this user")
    (pipe,) = fifo.make(tmp_path, ["p"])
    reader = os.open(pipe, os.O_RDONLY | os.O_NONBLOCK)
    try:
        sink = FifoSink(pipe, lambda: True)
        sink.open()
        try:
            assert sink.fd is not None and fcntl.fcntl(sink.fd, getattr(fcntl, "F_GETPIPE_SZ", 1032)) == fifo.PIPE_BYTES
        finally:
            sink.close()
    finally:
        os.close(reader)


def test_open_for_writing_ends_on_cancel(tmp_path):
    pipe = tmp_path / "p"
    os.mkfifo(pipe)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(fifo.Cancelled):
        fifo.open_for_writing(pipe, cancel, lambda: True)
    with pytest.raises(fifo.NoReader, match="p: the reader exited"):
        fifo.open_for_writing(pipe, threading.Event(), lambda: False)
