"""`write_folder_once`: a cache folder appears whole or not at all, and a process that loses the race keeps the
winner's folder."""

import os

import pytest

from clip_train.cache_folder import write_folder_once


def write_marker(text: str):
    def write_into(staging: str) -> None:
        with open(os.path.join(staging, "marker.txt"), "w") as f:
            f.write(text)

    return write_into


def read_marker(folder: str) -> str:
    with open(os.path.join(folder, "marker.txt")) as f:
        return f.read()


def test_the_folder_is_written_once_and_then_only_read(tmp_path):
    folder = str(tmp_path / "cache" / "set-v1")
    assert write_folder_once(folder, write_marker("first")) == folder
    write_folder_once(folder, write_marker("second"))
    assert read_marker(folder) == "first" and os.listdir(tmp_path / "cache") == ["set-v1"]


def test_losing_the_race_keeps_the_winners_folder_and_drops_the_staging_copy(tmp_path):
    folder = str(tmp_path / "set-v1")

    def another_process_wins(staging: str) -> None:
        write_marker("mine")(staging)
        write_folder_once(folder, write_marker("winner"))  # finishes between our check and our rename

    write_folder_once(folder, another_process_wins)
    assert read_marker(folder) == "winner" and os.listdir(tmp_path) == ["set-v1"]


def test_a_failed_write_leaves_nothing_behind_and_raises(tmp_path):
    def fails(staging: str) -> None:
        write_marker("half")(staging)
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_folder_once(str(tmp_path / "set-v1"), fails)
    assert os.listdir(tmp_path) == []
