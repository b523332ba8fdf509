"""Training-step speed of `compile=true` against eager, side by side in one process.

    python scripts/benchmark_compile.py                                  # model=test, batch 32, this machine
    python scripts/benchmark_compile.py --rounds 5 --steps 10 model=tiny data.batch_size=64

The composed config's model is built twice from one seed: eager, and compiled by
`clip_train.model.compiling.compile_model` (what `compile=true` runs: inductor's default mode). Each has its
own AdamW and trains on one random batch of the config's size (images normalised as the data module does,
token ids of the CLIP BPE's 49408) with the config's objective: forward, backward, optimizer step.

- compile time: the first compiled step, which traces and generates the forward and backward kernels, timed
  alone, less the first eager step; inductor writes to a fresh cache folder, so it is a cold start's (a second
  run of the same model with the default cache reuses its kernels). One more step of each is warm-up;
- samples/s: `--rounds` rounds alternate `--steps` eager and `--steps` compiled steps, so that load from
  other processes on a shared machine falls on both alike; each is the median over rounds. The ratio,
  compiled over eager, is the median of the rounds' own ratios: the two halves of a round are seconds
  apart, while a shared machine's speed drifts by more than the effect over a run.

Results go to stdout and to `--out` (JSON).
"""

import argparse
import copy
import json
import os
import statistics
import tempfile
import time

os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="benchmark_compile-")  # cold: nothing compiled yet

import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.utils import instantiate  # noqa: E402

from clip_train.model.compiling import compile_model  # noqa: E402
from clip_train.paths import CONFIG_DIR  # noqa: E402

CLIP_VOCAB = 49408


class Trainer:
    """One model, its AdamW and the objective: `step()` is one training step on `batch`."""

    def __init__(self, model, objective, batch: dict[str, torch.Tensor]):
        self.model, self.objective, self.batch = model.train(), objective, batch
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.objective(self.model.training_forward(self.batch))["loss"].backward()
        self.optimizer.step()

    def timed_steps(self, steps: int) -> float:
        """Seconds for `steps` steps."""
        start = time.perf_counter()
        for _ in range(steps):
            self.step()
        return time.perf_counter() - start


def random_batch(model, size: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """(size, 3, S, S) standard-normal images (normalised pixels), (size, L) token ids, full attention masks."""
    length = model.context_length
    return {
        "image": torch.randn(size, 3, model.image_size, model.image_size, generator=generator),
        "input_ids": torch.randint(1, CLIP_VOCAB, (size, length), generator=generator),
        "attention_mask": torch.ones(size, length, dtype=torch.long),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10, help="steps of each model per round")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", default="benchmark_compile.json")
    parser.add_argument("overrides", nargs="*", help="clip_train overrides, e.g. model=tiny data.batch_size=64")
    args = parser.parse_args()
    overrides = args.overrides or ["model=test", "data.batch_size=32"]
    torch.set_num_threads(args.threads)
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    torch.manual_seed(cfg.seed)
    eager_model = instantiate(cfg.model, text_tower={"vocab_size": CLIP_VOCAB})
    compiled_model = copy.deepcopy(eager_model)
    compile_model(compiled_model)
    batch = random_batch(eager_model, cfg.data.batch_size, torch.Generator().manual_seed(cfg.seed))
    eager = Trainer(eager_model, instantiate(cfg.loss), batch)
    compiled = Trainer(compiled_model, instantiate(cfg.loss), batch)

    first_eager, first_compiled = eager.timed_steps(1), compiled.timed_steps(1)
    eager.timed_steps(1), compiled.timed_steps(1)  # warm-up
    rates = {"eager": [], "compiled": []}
    for _ in range(args.rounds):
        for name, trainer in (("eager", eager), ("compiled", compiled)):
            rates[name].append(args.steps * cfg.data.batch_size / trainer.timed_steps(args.steps))
    eager_rate, compiled_rate = statistics.median(rates["eager"]), statistics.median(rates["compiled"])
    round_ratios = [compiled / eager for eager, compiled in zip(rates["eager"], rates["compiled"])]
    result = {
        "overrides": overrides,
        "threads": args.threads,
        "batch_size": cfg.data.batch_size,
        "compile_time_s": first_compiled - first_eager,
        "first_step_s": {"eager": first_eager, "compiled": first_compiled},
        "eager_samples_per_sec": eager_rate,
        "compiled_samples_per_sec": compiled_rate,
        "compiled_over_eager": statistics.median(round_ratios),
        "compiled_over_eager_by_round": round_ratios,
        "samples_per_sec_by_round": rates,
    }
    print(json.dumps(result, indent=2))
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
