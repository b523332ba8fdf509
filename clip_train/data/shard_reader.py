"""Tar shards to samples, one shard at a time, with every shard-level failure classified and counted.

webdataset's own `tarfile_samples` reports failures through one handler with no notion of
which shard ended how (a truncated tar can reach the handler twice, an empty shard not at all),
so shards are read here: opened with webdataset's `gopen` (local paths, `pipe:`, http(s), s3, gs),
walked with `tarfile` in stream mode, and members grouped into samples by key.

A shard yields `{"__key__": str, "__url__": str, "<ext>": bytes, ...}` samples, then at most
one shard-level report (see `clip_train.data.bad_data`): `unreadable_shard` if it cannot be
opened or its pipe command fails, `empty_shard` if it holds no member, `truncated_tar` if it
ends early (the sample being read at the cut is dropped; those before it are kept), and
`corrupt_tar` if its bytes are not a tar. A tar counts as complete only if it ends in a zero
block, the end-of-archive marker every tar writer puts last; without that check a cut that falls
between two members would look like a normal end.
"""

import tarfile
from collections.abc import Iterator

from webdataset.gopen import gopen
from webdataset.tariterators import base_plus_ext

from clip_train.data.bad_data import BadSampleCounter

BLOCK = tarfile.BLOCKSIZE


class _TailRecorder:
    """A read-only stream that remembers how many bytes went through it and the last block of them."""

    def __init__(self, stream) -> None:
        self.stream, self.total, self.tail = stream, 0, b""

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        self.total += len(data)
        self.tail = (self.tail + data[-BLOCK:])[-BLOCK:]
        return data

    def drain(self) -> None:
        while self.read(1 << 16):
            pass


def _samples(url: str, tar: tarfile.TarFile) -> Iterator[dict]:
    """Consecutive members sharing a key, as one sample; a repeated extension starts a new sample.

    A sample is yielded when the header of the next sample's first member arrives (or the tar ends),
    so a cut inside a member loses only the sample that member belongs to.
    """
    sample = None
    for info in tar:
        tar.members = []  # stream mode keeps every header otherwise
        key, extension = base_plus_ext(info.name)
        if not info.isreg() or key is None or info.name.rsplit("/", 1)[-1].startswith("__"):
            continue
        extension = extension.lower()
        if sample is not None and (key != sample["__key__"] or extension in sample):
            yield sample
            sample = None
        if sample is None:
            sample = {"__key__": key, "__url__": url}
        sample[extension] = tar.extractfile(info).read()
    if sample is not None:
        yield sample


def _problem(error: Exception, samples: int) -> tuple[str, str]:
    """(kind, detail) for an exception raised while reading a shard."""
    detail = f"{error.__class__.__name__}: {error}"
    if isinstance(error, tarfile.ReadError):
        message = str(error)
        if message == "empty file":
            return "empty_shard", "zero-byte file"
        if "unexpected end of data" in message:
            return "truncated_tar", f"cut inside a member after {samples} samples"
        return "corrupt_tar", detail
    if isinstance(error, EOFError):
        return "truncated_tar", detail
    return "unreadable_shard", detail


def _close(stream) -> str | None:
    """Close `stream`; a pipe reports its command's failure here. Returns that failure, if any."""
    try:
        stream.close()
    except Exception as error:
        return f"{error.__class__.__name__}: {error}"
    return None


def _read(url: str, recorder: _TailRecorder) -> Iterator[dict]:
    """The shard's samples; returns (kind, detail) for a shard that is empty or has no end-of-archive marker.

    Each sample is held back until the next one starts, so the last one of a tar cut between two
    members (possibly missing its caption) is dropped with the truncation rather than counted twice.
    """
    samples, last = 0, None
    try:
        with tarfile.open(fileobj=recorder, mode="r|*") as tar:
            for sample in _samples(url, tar):
                if last is not None:
                    yield last
                samples, last = samples + 1, sample
            compressed = getattr(tar.fileobj, "comptype", "tar") != "tar"  # a cut compressed stream fails to decompress
    except Exception:
        if last is not None:  # a later sample began, so this one is whole
            yield last
        raise
    recorder.drain()
    if samples == 0:
        return "empty_shard", "a tar without members"
    if not compressed and recorder.tail.count(0) != BLOCK:
        return "truncated_tar", f"no end-of-archive block after {samples - 1} whole samples ({recorder.total} bytes)"
    yield last
    return None


def shard_samples(shards: Iterator[dict], counter: BadSampleCounter) -> Iterator[dict]:
    """Samples of every shard `{"url": ...}` in `shards`, in order; failures are counted, never raised."""
    for shard in shards:
        url = shard["url"]
        try:
            stream = gopen(url)
        except Exception as error:
            counter.skip("unreadable_shard", url, f"{error.__class__.__name__}: {error}")
            continue
        samples, problem = 0, None
        recorder = _TailRecorder(stream)
        try:
            reader = _read(url, recorder)
            while True:
                try:
                    sample = next(reader)
                except StopIteration as end:
                    problem = end.value
                    break
                samples += 1
                yield sample
        except Exception as error:
            problem = _problem(error, samples)
        finally:
            failure = _close(stream)
        if failure is not None:
            problem = ("unreadable_shard", failure)
        if problem is not None:
            counter.skip(problem[0], url, problem[1])
