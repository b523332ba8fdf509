"""The learning guard: on the glyph world, which no default is tuned on, three seeds of a short run of the
benchmark's recipe must reach a mean held-out R@1 sum that a real 10% drop in learning would miss.

One seed cannot tell a regression from chance, so the bound is on the mean of three, from one
`--multirun seed=0,1,2` (its summary.json is the figure). The run is the recipe of
scripts/benchmark_learning_vs_openclip.py with its `tiny` tower (the preset as shipped), shortened to fit
CI: fewer pairs and steps, the same model, loss, optimizer and batch. See README "Learning against
OpenCLIP" for how the bound was set and the settings it was shown to catch. To see it catch one, add overrides to every run:

    CLIP_TRAIN_LEARNING_OVERRIDES='data.crop_scale=[0.3,1.0]' python -m pytest tests/test_heldout_learning.py
"""

import json
import os
import subprocess
import sys

import pytest

from clip_train.data.world.glyph_world import write_glyph_world

STEPS = 200
# today's mean over seeds 0-2, measured twice: 1.311 (1.372, 1.308, 1.252; one torch thread, before the issue-22/23
# merges) and 1.287 (1.326, 1.360, 1.176; two threads, after them), so about 1.30 with a standard deviation of about
# 0.035 for a mean of three. A run 10% worse averages 1.17, below the bound; today's code clears it by about 2.3
# standard deviations of the mean
MEASURED = 1.30
BOUND = 1.22


@pytest.mark.slow
def test_three_seeds_of_a_short_run_on_the_glyph_world_learn_as_measured(tmp_path):
    train, val = write_glyph_world(str(tmp_path / "glyphs"), num_train=STEPS * 64, num_val=500, num_shards=4)
    sweep = tmp_path / "sweep"
    extra = os.environ.get("CLIP_TRAIN_LEARNING_OVERRIDES", "").split()
    done = subprocess.run(
        [sys.executable, "-m", "clip_train", "--multirun", "seed=0,1,2", "model=tiny", "loss=infonce", "data=webdataset",
         f"data.train_shards='{train}'", f"data.val_shards='{val}'", "data.num_workers=1", "data.batch_size=64",
         f"trainer.max_steps={STEPS}", "trainer.num_sanity_val_steps=0", "eval=none", "ckpt_path=null",
         "callbacks.model_checkpoint.every_n_train_steps=1000", f"hydra.sweep.dir={sweep}", *extra],
        capture_output=True, text=True, env=os.environ, timeout=1800,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    (summary,) = json.loads((sweep / "summary.json").read_text()).values()
    r1 = [i + t for i, t in zip(summary["val/image_to_text_R@1"]["values"], summary["val/text_to_image_R@1"]["values"])]
    mean = sum(r1) / len(r1)
    print(f"R@1 sums {r1}, mean {mean:.4f} (bound {BOUND})")
    assert len(r1) == 3 and mean >= BOUND, f"mean held-out R@1 sum {mean:.4f} < {BOUND} (measured {MEASURED}); per seed {r1}"
