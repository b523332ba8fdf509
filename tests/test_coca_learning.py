"""A short CoCa run on the synthetic scenes captions held-out scenes with their right colours (shapes: measured).

Keyword accuracy: the first colour word and the first shape word of a generated caption are
right when the scene has an object of that colour (shape). Two baselines: uniform guessing
(a colour is right with probability |scene colours| / 8), and the same generated captions
scored against other scenes (what a model that ignores the image would get).
"""

import random

import pytest

import clip_train
from clip_train.data.scenes import COLORS, SHAPES, make_pair
from clip_train.train import run

NUM_TRAIN, NUM_VAL, SCORED = 4096, 128, 128


def first_keywords(caption: str) -> tuple[str | None, str | None]:
    words = caption.lower().split()
    colour = next((w for w in words if w in COLORS), None)
    shape = next((s for w in words for s in SHAPES if w in (s, s + "s", s + "es")), None)
    return colour, shape


def keyword_accuracy(captions: list[str], scenes: list) -> tuple[float, float]:
    colours = shapes = 0
    for caption, scene in zip(captions, scenes):
        colour, shape = first_keywords(caption)
        colours += colour in {g.color for g in scene.groups}
        shapes += shape in {g.shape for g in scene.groups}
    return colours / len(captions), shapes / len(captions)


@pytest.mark.slow
def test_coca_captions_name_the_right_colour_and_shape(compose_config, tmp_path):
    cfg = compose_config(
        "model=coca_test",
        f"data.synthetic.num_train={NUM_TRAIN}",
        f"data.synthetic.num_val={NUM_VAL}",
        "data.synthetic.samples_per_shard=1024",
        "data.synthetic.image_size=32",
        "data.batch_size=32",
        "data.num_workers=0",
        "optim.optimizer.lr=3e-3",
        "optim.scheduler.warmup_steps=20",
        "trainer.max_steps=150",
        "trainer.val_check_interval=150",
        "trainer.num_sanity_val_steps=0",
        "callbacks.captions.samples=32",
        f"paths.output_dir={tmp_path}",
    )
    metrics = run(cfg)
    assert metrics["val/cider"] > 0 and metrics["val/bleu4"] > 0
    model = clip_train.load(str(tmp_path / "checkpoints" / "last.ckpt"))
    pairs = [make_pair(cfg.data.synthetic.seed, NUM_TRAIN + i, cfg.data.synthetic.image_size) for i in range(SCORED)]
    captions = model.caption([image for image, _, _ in pairs])
    scenes = [scene for _, _, scene in pairs]
    colour, shape = keyword_accuracy(captions, scenes)
    shuffled = scenes[1:] + scenes[:1]
    random.Random(0).shuffle(shuffled)
    blind_colour, blind_shape = keyword_accuracy(captions, shuffled)
    uniform_colour = sum(len(s.groups) for s in scenes) / len(scenes) / len(COLORS)  # ≈ 0.19
    uniform_shape = sum(len({g.shape for g in s.groups}) for s in scenes) / len(scenes) / len(SHAPES)  # ≈ 0.29
    print(f"colour {colour:.2f} (blind {blind_colour:.2f}, uniform {uniform_colour:.2f}); "
          f"shape {shape:.2f} (blind {blind_shape:.2f}, uniform {uniform_shape:.2f})\n{captions[:5]}")  # fmt: skip
    # measured (seed 0): colour 0.80 (blind 0.21, uniform 0.18); shape 0.33 (blind 0.26, uniform 0.28).
    # Shapes at 32 px are not yet learnt in 150 steps: printed, not asserted.
    assert colour > 3 * uniform_colour and colour > 2 * blind_colour
