"""CaptionTask's `samples` is a budget for the whole run: 2 gloo processes caption and score the same
images as one process, not `samples` images each."""

import pytest
import torch
from gloo import on_gloo_ranks

from clip_train.eval.captioning import CaptionTask, caption_metrics
from clip_train.eval.tasks import run_tasks

SAMPLES = 5


class WordTokenizer:
    """Token id i > 2 is the word "w<i>"; 1 and 2 open and close a caption."""

    bos_token_id, eos_token_id = 1, 2

    def batch_decode(self, ids, skip_special_tokens: bool = True) -> list[str]:
        return [" ".join(f"w{int(i)}" for i in row if int(i) > 2) for row in ids]


def reference(image: int) -> list[int]:
    return [3 + image + position for position in range(5)]


def caption(image: int) -> list[int]:
    """The reference with the word at position image % 5 wrong: BLEU and CIDEr depend on which images are scored."""
    return [99 if position == image % 5 else word for position, word in enumerate(reference(image))]


class Captioner:
    """A stand-in captioning ClipModel: the "image" is its index, and it counts the images it captions."""

    can_caption = True
    tokenizer = WordTokenizer()

    def __init__(self):
        self.captioned = 0

    def caption_ids(self, images: torch.Tensor) -> list[list[int]]:
        self.captioned += len(images)
        return [caption(int(image)) for image in images]


def batch(images: list[int]) -> dict[str, torch.Tensor]:
    return {"image": torch.tensor(images), "input_ids": torch.tensor([reference(i) for i in images])}


def validate(rank: int, world: int, images: list[list[int]]) -> dict:
    """One validation pass of CaptionTask(samples=SAMPLES) over this rank's batches of image indices, its metrics
    named as the training run logs them."""
    task, captioner = CaptionTask(samples=SAMPLES), Captioner()
    task.start(rank, world)
    for indices in images:
        task.observe(captioner, batch(indices), {})
    metrics = run_tasks([("val", task)], captioner, rank, world)
    return {"captioned": captioner.captioned, **metrics}


def validate_share(rank: int, world: int, per_rank: list[list[list[int]]]) -> dict:
    return validate(rank, world, per_rank[rank])


@pytest.mark.slow
def test_two_processes_caption_and_score_the_images_one_process_does(tmp_path):
    tokenizer = WordTokenizer()
    scored = range(SAMPLES)  # one process captions the first 5 images of its batches
    expected = caption_metrics(tokenizer.batch_decode([caption(i) for i in scored]),
                               tokenizer.batch_decode([reference(i) for i in scored]))  # fmt: skip
    alone = validate(0, 1, [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]])
    assert alone == pytest.approx({"captioned": SAMPLES} | {f"val/{name}": value for name, value in expected.items()})
    # rank 0's share of the budget is 3 images, rank 1's is 2: together the same 5 images
    per_rank = [[[0, 1, 2, 5], [6, 7, 8, 9]], [[3, 4, 10, 11], [12, 13, 14, 15]]]
    shares = on_gloo_ranks(validate_share, 2, tmp_path, per_rank)
    assert [share["captioned"] for share in shares] == [3, 2]
    for share in shares:
        assert share | {"captioned": SAMPLES} == pytest.approx(alone)
