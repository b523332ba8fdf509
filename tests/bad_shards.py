"""Shards with every kind of bad data planted at known places, and the counts a reader must report."""

import io
import os
import tarfile

from helpers import colour_samples

from clip_train.data.shard_writer import encode_image


def _tar_bytes(members: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, payload in members:
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return buffer.getvalue()


def _good(index: int) -> list[tuple[str, bytes]]:
    sample = colour_samples(1, start=index)[0]
    return [(f"{sample.key}.jpg", encode_image(sample.image, "jpg")), (f"{sample.key}.txt", sample.caption.encode())]


def _member_end(data: bytes, name: str) -> int:
    """Byte offset just past the (block-padded) data of member `name` in tar `data`."""
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        info = tar.getmember(name)
    return info.offset_data + -(-info.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE


def write_bad_shards(folder: str) -> tuple[list[str], dict[str, int], list[int]]:
    """Writes `bad-0000{0..5}.tar` under `folder`; returns (their paths, {kind: planted count}, good keys).

    bad-00000: good samples 0-5 with one sample of each sample-level kind between them
    bad-00001: a tar without members; bad-00002: a zero-byte file (both empty shards)
    bad-00003: good samples 10-13, then cut inside sample 14's image
    bad-00004: good samples 20-22, then sample 23's image, then cut on a block boundary (no end marker)
    bad-00005: bytes that are no tar
    """
    os.makedirs(folder, exist_ok=True)
    jpeg = _good(100)[0][1]
    mixed = _good(0) + [("000000101.jpg", jpeg[: len(jpeg) // 2]), ("000000101.txt", b"a truncated jpeg")]
    mixed += _good(1) + [("000000102.jpg", b"<html>404 Not Found</html>"), ("000000102.txt", b"an error page")]
    mixed += _good(2) + [("000000103.jpg", b""), ("000000103.txt", b"a zero-byte image")]
    mixed += [("000000104.txt", b"a caption alone"), ("000000104.json", b"{}")]
    mixed += _good(3) + [("000000105.jpg", jpeg)]
    mixed += [("000000106.jpg", jpeg), ("000000106.txt", b"  \n ")]
    mixed += _good(4) + [("000000107.jpg", jpeg), ("000000107.txt", b"caf\xe9 latin-1")]
    mixed += _good(5)
    cut_inside = _tar_bytes([m for i in range(10, 15) for m in _good(i)])
    cut_inside = cut_inside[: _member_end(cut_inside, "000000013.txt") + 512 + 100]
    cut_between = _tar_bytes([m for i in range(20, 24) for m in _good(i)])
    cut_between = cut_between[: _member_end(cut_between, "000000023.jpg")]
    contents = [_tar_bytes(mixed), _tar_bytes([]), b"", cut_inside, cut_between, b"this is no tar archive\n" * 50]
    paths = []
    for index, data in enumerate(contents):
        paths.append(os.path.join(folder, f"bad-{index:05d}.tar"))
        with open(paths[-1], "wb") as f:
            f.write(data)
    planted = {
        "corrupt_image": 1,
        "not_image": 1,
        "empty_file": 1,
        "missing_image": 1,
        "missing_caption": 1,
        "empty_caption": 1,
        "caption_not_utf8": 1,
        "empty_shard": 2,
        "truncated_tar": 2,
        "corrupt_tar": 1,
        "unreadable_shard": 0,
    }
    return paths, planted, [0, 1, 2, 3, 4, 5, 10, 11, 12, 13, 20, 21, 22]
