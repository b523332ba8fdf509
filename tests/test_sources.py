"""Several training sources mixed by weight: realised proportions against the binomial tolerance, and config errors."""

import math
import multiprocessing
import random

import pytest
import torch
from helpers import colour_samples, keys, make_datamodule

from clip_train.data.pipeline import PairStream
from clip_train.data.shard_writer import write_shards
from clip_train.data.sources import ShardSource, shard_weights

WEIGHT_A = 0.7
SIZE_A, SIZE_B = 4, 16  # samples per shard: source B's shards are 4x larger


def write_two_sources(tmp_path) -> tuple[str, str]:
    """Source A: 10 shards of 4 samples, keys 0-39; source B: 5 shards of 16, keys 1000-1079."""
    write_shards(str(tmp_path / "a"), "a", colour_samples(40, size=8), samples_per_shard=SIZE_A)
    write_shards(str(tmp_path / "b"), "b", colour_samples(80, start=1000, size=8), samples_per_shard=SIZE_B)
    return str(tmp_path / "a" / "a-{00000..00009}.tar"), str(tmp_path / "b" / "b-{00000..00004}.tar")


def sources(a: str, b: str, weights=(WEIGHT_A, 1 - WEIGHT_A)) -> list[dict]:
    return [{"shards": a, "weight": weights[0], "name": "a"}, {"shards": b, "weight": weights[1], "name": "b"}]


def test_mixed_stream_gives_each_source_its_weight_of_the_samples(tmp_path):
    a, b = write_two_sources(tmp_path)
    samples = 2000
    datamodule = make_datamodule(None, sources=sources(a, b), resampled=True, samples_per_epoch=samples)
    stream = PairStream(  # the real shard draws, reading and decoding; images and captions are not needed here
        datamodule.train_urls, rank=0, world=1, batch_size=100, image_transform=lambda image: torch.zeros(0),
        tokenize=lambda captions: {}, seed=0, resampled=True, shuffle_buffer=100, batches_per_rank=samples // 100,
        epoch=multiprocessing.Value("i", 0), shard_weights=datamodule.train_shard_weights,
    )  # fmt: skip
    drawn = keys(stream)
    assert len(drawn) == samples
    share_a = sum(key < 1000 for key in drawn) / samples
    # Shards are drawn i.i.d.: a draw is from A with probability q, so the share of A-shards x among
    # n draws is binomial, sd sqrt(q(1-q)/n); A's sample share is g(x) = 4x / (4x + 16(1-x)), whose
    # sd follows by the delta method: g'(q) sd(x).
    q = (WEIGHT_A / SIZE_A) / (WEIGHT_A / SIZE_A + (1 - WEIGHT_A) / SIZE_B)
    draws = samples / (q * SIZE_A + (1 - q) * SIZE_B)
    slope = SIZE_A * SIZE_B / (q * SIZE_A + (1 - q) * SIZE_B) ** 2
    tolerance = 4 * slope * math.sqrt(q * (1 - q) / draws)
    assert abs(share_a - WEIGHT_A) < tolerance < 0.15, (share_a, tolerance)
    # without the size correction A would get 0.7·4 / (0.7·4 + 0.3·16) = 0.37 of the samples
    assert set(drawn) <= set(range(40)) | set(range(1000, 1080))


def test_shard_draws_follow_the_weights_over_many_draws():
    shards = [ShardSource("a", [f"a{i}" for i in range(3)], 0.25, 300), ShardSource("b", ["b0"], 0.75, 100)]
    weights = shard_weights(shards)
    urls = [url for source in shards for url in source.urls]
    draws = 100_000
    rng = random.Random(0)
    picked = rng.choices(urls, weights=weights, k=draws)
    # equal shard sizes (100 samples each): A's three shards together take 25% of the draws
    share_a = sum(url.startswith("a") for url in picked) / draws
    assert abs(share_a - 0.25) < 4 * math.sqrt(0.25 * 0.75 / draws)
    assert weights == pytest.approx([0.25 / 300] * 3 + [0.75 / 100])


def test_unsized_sources_draw_sources_by_weight():
    shards = [ShardSource("a", ["a0", "a1"], 2.0, None), ShardSource("b", ["b0"], 1.0, 50)]
    assert shard_weights(shards) == pytest.approx([1.0, 1.0, 1.0])
    assert shard_weights([ShardSource("a", ["a0"], None, 4), ShardSource("b", ["b0"], None, 4)]) is None


def test_sources_epoch_size_defaults_to_their_sizes(tmp_path):
    a, b = write_two_sources(tmp_path)
    datamodule = make_datamodule(None, sources=sources(a, b), resampled=True)
    assert datamodule.samples_per_epoch == 120 and len(datamodule.train_urls) == 15
    names = [url.rsplit("/", 1)[-1] for url in datamodule.tokenizer_urls()]  # captions of every source reach the vocabulary
    assert names[:4] == ["a-00000.tar", "b-00000.tar", "a-00001.tar", "b-00001.tar"] and sorted(names) == sorted(
        url.rsplit("/", 1)[-1] for url in datamodule.train_urls
    )


def test_remote_sources_take_their_size_from_the_config(tmp_path):
    a, _ = write_two_sources(tmp_path)
    remote = {"shards": "pipe:curl -s https://example.org/c-{0..3}.tar", "weight": 0.5, "samples": 400}
    datamodule = make_datamodule(None, sources=[{"shards": a, "weight": 0.5}, remote], resampled=True)
    assert datamodule.samples_per_epoch == 440
    assert datamodule.train_shard_weights == pytest.approx([0.5 / 40] * 10 + [0.5 / 400] * 4)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (lambda a, b: {"train_shards": a}, "data.train_shards and data.sources are both set"),
        (lambda a, b: {"resampled": False}, r"data.sources\[0\].weight needs data.resampled=true"),
        (lambda a, b: {"sources": [{"shards": a, "weigth": 1}]}, r"data.sources\[0\] has unknown key 'weigth'"),
        (lambda a, b: {"sources": [{"weight": 1}]}, r"data.sources\[0\] must be a mapping with a 'shards' pattern"),
        (lambda a, b: {"sources": [{"shards": a, "weight": 1}, {"shards": b}]}, "give every source a weight, or none"),
        (lambda a, b: {"sources": [{"shards": a, "weight": 0}]}, r"data.sources\[0\].weight must be positive"),
        (lambda a, b: {"sources": [{"shards": a, "samples": -3}]}, r"data.sources\[0\].samples must be a positive"),
        (
            lambda a, b: {"sources": [{"shards": b + "x*", "weight": 1}]},
            r"data.sources\[0\].shards: pattern .* matches no file",
        ),
    ],
)
def test_bad_sources_fail_naming_the_key(tmp_path, settings, message):
    a, b = write_two_sources(tmp_path)
    settings = {"train_shards": None, "sources": sources(a, b), "resampled": True} | settings(a, b)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        make_datamodule(settings.pop("train_shards"), **settings)


def test_unweighted_sources_without_resampling_read_every_sample_once_per_pass(tmp_path):
    a, b = write_two_sources(tmp_path)
    unweighted = [{"shards": a}, {"shards": b}]
    datamodule = make_datamodule(None, sources=unweighted, batch_size=8, image_size=8, shuffle_buffer=1)
    datamodule.setup("fit")
    assert datamodule.samples_per_epoch == 120  # one pass over both sources: each sample exactly once
    assert sorted(keys(datamodule.train_dataloader())) == list(range(40)) + list(range(1000, 1080))


def test_sources_from_a_command_line_override(tmp_path, compose_config):
    from clip_train.build import build_datamodule

    a, b = write_two_sources(tmp_path)
    override = f'data.sources=[{{shards: "{a}", weight: 0.7, name: web}}, {{shards: "{b}", weight: 0.3}}]'
    cfg = compose_config("data=webdataset", override, "data.resampled=true", "data.num_workers=0", "model=test")
    datamodule = build_datamodule(cfg)
    assert [source.name for source in datamodule.sources] == ["web", "source1"]
    assert datamodule.train_shard_weights == pytest.approx([0.7 / 40] * 10 + [0.3 / 80] * 5)
