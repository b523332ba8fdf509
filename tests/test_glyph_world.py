"""The glyph world (clip_train/data/world/glyph_world.py), the held-out world of the learning benchmark: reproducible,
disjoint from the embedded scenes' words, written as plain tars a reader must count; and the benchmark's
significance test against Student's t tables."""

import os
import sys
import tarfile

import pytest

from clip_train.data.shards import expand_shards
from clip_train.data.tar_count import count_tar_samples
from clip_train.data.world import scenes
from clip_train.data.world.glyph_world import VOCABULARY, make_glyph_pair, write_glyph_world

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "scripts"))
from benchmark_learning_vs_openclip import student_t_tail, welch  # noqa: E402


def test_a_sample_depends_only_on_seed_and_index_and_its_caption_uses_the_vocabulary():
    image, caption, board = make_glyph_pair(0, 7, 64)
    again, caption_again, _ = make_glyph_pair(0, 7, 64)
    assert image.tobytes() == again.tobytes() and caption == caption_again
    assert make_glyph_pair(1, 7, 64)[1] != caption or make_glyph_pair(1, 7, 64)[0].tobytes() != image.tobytes()
    words = set()
    for index in range(500):
        _, caption, board = make_glyph_pair(0, index, 64)
        words |= set(caption.split())
        assert all(glyph.colour in caption and glyph.kind in caption for glyph in board.glyphs)
    assert words == VOCABULARY


def test_it_shares_no_object_or_colour_word_with_the_embedded_scenes():
    embedded = set(scenes.COLORS) | set(scenes.SHAPES) | set(scenes.BACKGROUNDS)
    assert not embedded & VOCABULARY


def test_it_is_written_as_plain_tars_with_disjoint_splits(tmp_path):
    train, val = write_glyph_world(str(tmp_path), num_train=60, num_val=20, num_shards=3)
    train_urls = expand_shards(train, "train")
    assert len(train_urls) == 3 and not (tmp_path / "sizes.json").exists()
    assert [count_tar_samples(url) for url in train_urls] == [20, 20, 20]
    assert count_tar_samples(expand_shards(val, "val")[0]) == 20
    names = {name for url in train_urls for name in tarfile.open(url).getnames()}
    val_names = set(tarfile.open(expand_shards(val, "val")[0]).getnames())
    assert len(names) == 120 and not names & val_names


@pytest.mark.parametrize(("t", "df", "p"), [(12.706, 1, 0.05), (2.776, 4, 0.05), (4.604, 4, 0.01), (2.228, 10, 0.05)])
def test_the_two_sided_p_value_matches_student_t_tables(t, df, p):
    assert 2 * student_t_tail(t, df) == pytest.approx(p, abs=2e-4)


def test_welch_t_of_two_seed_samples():
    t, df, p = welch([0.35, 0.36, 0.34], [0.30, 0.33, 0.31])
    # by hand: means 0.35 and 0.3133, variances 1e-4 and 2.333e-4, so t = 0.03667 / sqrt((1e-4 + 2.333e-4) / 3)
    assert t == pytest.approx(3.4785, abs=1e-3) and df == pytest.approx(3.448, abs=0.01) and 0.02 < p < 0.05
