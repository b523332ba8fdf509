"""The number of samples a full read of a local tar shard yields, counted from its headers alone.

A plain tar is scanned by seeking: read each 512-byte header, seek past the member's data, so a
shard of 10,000 samples costs ~30,000 small reads and no decoding. Members are grouped into samples
by the rules of `clip_train.data.shard_reader`: webdataset's `base_plus_ext` splits the key at the
first dot of the file name; only regular files count, and not those without an extension or whose
file name starts with `__`; consecutive members with one key form a sample, and a repeated (lower-
cased) extension starts a new one. The reader's handling of broken shards is matched too: nothing
from a shard that is empty or no tar, and one sample fewer (the one cut) from a tar that does not
end in a zero block (truncated).

Headers that need more than one block (GNU long names, pax records) or look unusual (a bad checksum,
base-256 sizes) hand the shard to `tarfile`, which reads every header (slower, same result).
Compressed tars (.tar.gz, .tar.bz2, .tar.xz) cannot be seeked through: they are decompressed and
read in full, as the reader does.
"""

import tarfile
import zlib
from collections.abc import Iterable, Iterator

from webdataset.tariterators import base_plus_ext

BLOCK = tarfile.BLOCKSIZE
COMPRESSED_MAGIC = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00")
REGULAR = (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE)
DATALESS = (tarfile.LNKTYPE, tarfile.SYMTYPE, tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.DIRTYPE, tarfile.FIFOTYPE)
EXTENDED = (*tarfile.GNU_TYPES, tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE)
READ_ERRORS = (tarfile.ReadError, EOFError, OSError, zlib.error)  # a shard cut short, or its compressed stream


class _NeedsTarfile(Exception):
    """A header the seek scan does not parse; `tarfile` reads the shard instead."""


def _text(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _octal(field: bytes) -> int:
    try:
        return int(_text(field).strip() or "0", 8)
    except ValueError:  # base-256 or garbage
        raise _NeedsTarfile from None


def _seek_scan(file) -> Iterator[tuple[str, bool]]:
    """(name, is a regular file) of every member of the plain tar `file`, up to its end or a cut."""
    offset = 0
    while True:
        file.seek(offset)
        header = file.read(BLOCK)
        if len(header) < BLOCK or header.count(0) == BLOCK:
            return
        kind = header[156:157]
        if kind in EXTENDED or _octal(header[148:156]) != _checksum(header):
            raise _NeedsTarfile
        name = _text(header[:100])
        directory = kind == tarfile.AREGTYPE and name.endswith("/")
        yield (f"{_text(header[345:500])}/{name}" if header[345] else name), kind in REGULAR and not directory
        size = _octal(header[124:136])
        offset += BLOCK + (0 if kind in DATALESS or directory else -(-size // BLOCK) * BLOCK)


def _checksum(header: bytes) -> int:
    """The header's checksum as tar writers compute it: its bytes summed, the checksum field taken as spaces."""
    return sum(header) - sum(header[148:156]) + 8 * ord(" ")


def _tarfile_scan(tar: tarfile.TarFile) -> Iterator[tuple[str, bool]]:
    """(name, is a regular file) of every member `tarfile` reads; a cut raises one of `READ_ERRORS`."""
    for info in tar:
        tar.members = []  # keeps every header otherwise
        yield info.name, info.isreg()


def _group(members: Iterable[tuple[str, bool]]) -> tuple[int, bool]:
    """(samples the members form, grouped as `shard_reader` groups them; whether the members were cut short)."""
    samples, key, extensions = 0, None, set()
    try:
        for name, regular in members:
            member_key, extension = base_plus_ext(name)
            if not regular or member_key is None or name.rsplit("/", 1)[-1].startswith("__"):
                continue
            extension = extension.lower()
            if member_key != key or extension in extensions:
                samples, key, extensions = samples + 1, member_key, set()
            extensions.add(extension)
    except READ_ERRORS:
        return samples, True
    return samples, False


def _ends_in_zero_block(file) -> bool:
    file.seek(0, 2)
    if file.tell() < BLOCK:
        return False
    file.seek(-BLOCK, 2)
    return file.read(BLOCK).count(0) == BLOCK


def looks_like_tar(path: str) -> bool:
    """Whether the file at `path` starts as a tar does: with a compressed stream's magic, an end-of-archive zero
    block (an empty tar), or a header whose checksum holds. One 512-byte read: cheap enough for every shard."""
    with open(path, "rb") as file:
        head = file.read(BLOCK)
    if head.startswith(COMPRESSED_MAGIC) or (len(head) == BLOCK and head.count(0) == BLOCK):
        return True
    try:
        return len(head) == BLOCK and _octal(head[148:156]) == _checksum(head)
    except _NeedsTarfile:
        return False


def count_tar_samples(path: str) -> int:
    """Samples a full read of the local tar (plain or compressed) at `path` yields; 0 for an empty or foreign file."""
    with open(path, "rb") as file:
        compressed = file.read(6).startswith(COMPRESSED_MAGIC)
        file.seek(0)
        try:
            if compressed:
                with tarfile.open(fileobj=file, mode="r|*") as tar:
                    samples, cut = _group(_tarfile_scan(tar))
            else:
                try:
                    samples, cut = _group(_seek_scan(file))
                except _NeedsTarfile:
                    file.seek(0)
                    with tarfile.open(fileobj=file, mode="r:") as tar:
                        samples, cut = _group(_tarfile_scan(tar))
        except READ_ERRORS:  # no tar at the start: empty, foreign bytes, or not the compression it looked like
            return 0
        cut = cut or (not compressed and not _ends_in_zero_block(file))
        return samples - 1 if samples and cut else samples
