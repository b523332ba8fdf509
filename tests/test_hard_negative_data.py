"""Hard negatives in the data pipeline: k tokenized negatives per caption in every training batch, and
batches composed of caption-word neighbours that still read every sample once."""

import itertools
import random
import re

import pytest
import torch

from clip_train.data import ShardDataModule
from clip_train.data.caption_negatives import hard_negatives
from clip_train.data.negative_batch import NegativeCaptions
from clip_train.data.neighbour_batches import neighbour_batches
from clip_train.data.shard_writer import Sample, write_shards
from clip_train.data.world.scenes import make_pair


def scene_shards(folder, count: int = 48, per_shard: int = 12) -> str:
    samples = []
    for index in range(count):
        image, caption, _ = make_pair(0, index, 16)
        samples.append(Sample(key=f"{index:09d}", image=image, caption=caption, metadata={}))
    write_shards(str(folder), "train", samples, samples_per_shard=per_shard)
    return str(folder / f"train-{{00000..{count // per_shard - 1:05d}}}.tar")


def datamodule(pattern: str, **options) -> ShardDataModule:
    return ShardDataModule(
        pattern, pattern, batch_size=8, num_workers=0, image_size=16, context_length=32, cache_dir=options.pop("cache"),
        shuffle_buffer=8, tokenizer_vocab_size=400, **options,
    )  # fmt: skip


def test_training_batches_carry_k_tokenized_negatives_of_their_own_captions(tmp_path, private_cache):
    data = datamodule(scene_shards(tmp_path), cache=private_cache, text_hard_negatives=3)
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    assert batch["negative_input_ids"].shape == (8, 3, 32) == batch["negative_attention_mask"].shape
    assert batch["negative_valid"].all()  # every embedded caption offers three negatives
    decode = data.tokenizer.batch_decode
    captions = [c.strip() for c in decode(batch["input_ids"], skip_special_tokens=True)]
    negatives = [c.strip() for c in decode(batch["negative_input_ids"].flatten(0, 1), skip_special_tokens=True)]
    for row, caption in enumerate(captions):
        own = negatives[3 * row : 3 * row + 3]
        assert len(set(own)) == 3 and caption not in own
        for negative in own:  # a false caption of this row: its words, or all but one of them
            words, negative_words = re.findall("[a-z]+", caption), re.findall("[a-z]+", negative)
            assert sorted(words) == sorted(negative_words) or len(words) == len(negative_words)
    assert "negative_input_ids" not in next(iter(data.val_dataloader()))  # validation scores plain pairs


def test_negatives_are_the_rules_draws_and_empty_slots_are_marked():
    class Words:
        """A stand-in tokenizer: one token, the text's length."""

        def __call__(self, texts):
            ids = torch.tensor([[len(t)] for t in texts])
            return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}

    captions = ["a red circle above a blue square", "dog"]
    made = NegativeCaptions(2, Words())(captions, seed=5)
    rng = random.Random(5)
    expected = [hard_negatives(caption, 2, rng) for caption in captions]
    assert made["negative_valid"].tolist() == [[True, True], [False, False]]  # "dog" offers nothing
    assert made["negative_input_ids"][0, :, 0].tolist() == [len(n) for n in expected[0]]
    with pytest.raises(ValueError, match="kinds among"):
        NegativeCaptions(2, Words(), kinds=["size"])


def brute_force_neighbour(words, waiting):
    """The waiting pair of highest word-set Jaccard similarity, the first of equals, never the very same words."""
    best, best_score = None, -1.0
    for index, other in enumerate(waiting):
        score = len(words & other) / len(words | other) if other != words else -1.0
        if score > best_score:
            best, best_score = index, score
    return best


def test_neighbour_batches_pair_nearest_captions_and_yield_every_pair_once():
    pairs = [(None, make_pair(0, i, 8)[1], i) for i in range(100)]
    words = {i: frozenset(re.findall("[a-z0-9]+", caption)) for _, caption, i in pairs}
    out = list(neighbour_batches(iter(pairs), batch_size=10, share=0.4, pool=30))
    assert sorted(key for _, _, key in out) == list(range(100))
    waiting = [key for _, _, key in pairs[:30]]  # replay the rule by brute force on the first batch
    anchor = waiting.pop(0)
    partner = waiting[brute_force_neighbour(words[anchor], [words[k] for k in waiting])]
    assert [key for _, _, key in out[:2]] == [anchor, partner]


def test_neighbour_batches_keep_exactly_once_epochs(tmp_path, private_cache):
    pattern = scene_shards(tmp_path)
    plain = datamodule(pattern, cache=private_cache)
    composed = datamodule(pattern, cache=private_cache, neighbour_share=0.5, neighbour_pool=16)
    keys = {}
    for name, data in (("plain", plain), ("composed", composed)):
        data.setup("fit")
        batches = [[int(k) for k in batch["key"]] for batch in data.train_dataloader()]
        assert len(batches) == 6
        keys[name] = batches
    assert sorted(itertools.chain(*keys["composed"])) == list(range(48))
    assert keys["composed"] != keys["plain"]
    with pytest.raises(ValueError, match="neighbour_share=1.5"):
        datamodule(pattern, cache=private_cache, neighbour_share=1.5)


@pytest.mark.parametrize(
    ("loss", "setting"),
    [
        ("loss=infonce", "loss.text_hard_negatives"),
        ("loss=siglip", "loss.text_hard_negatives"),
        ("loss=coca", "loss.terms.contrastive_loss.text_hard_negatives"),  # a weighted sum's contrastive term
        ("loss=coca_siglip", "loss.terms.contrastive_loss.text_hard_negatives"),
    ],
)
def test_the_loss_setting_reaches_the_data_workers(compose_config, loss, setting):
    from hydra.utils import instantiate

    from clip_train.build import data_build_config
    from clip_train.config import check_config

    model = "model=coca_test" if "coca" in loss else "model=test"
    cfg = compose_config(model, loss, f"{setting}=2", "data.neighbour_share=0.25")
    check_config(cfg)
    objective = instantiate(cfg.loss)
    contrastive = objective.terms["contrastive_loss"] if "coca" in loss else objective
    assert data_build_config(cfg, objective).text_hard_negatives == 2 and contrastive.text_hard_negatives == 2
    assert data_build_config(compose_config()).text_hard_negatives == 0  # the default trains plain CLIP
