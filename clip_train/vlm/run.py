"""`python -m clip_train.vlm`: build the VLM from a clip_train image tower, train its stages, score it against blind.

With `stage` unset the run trains `align` then `instruct`, trains the blind baseline (the same LM, from the same
initial weights, on the same questions without the image) and writes every metric to `<run dir>/metrics.json`.
`stage=align` or `stage=instruct` trains that stage alone; instruct starts from `init_from` (an align
checkpoint) when given, and is scored like the full run.
"""

import json
import logging
import os
import time

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from clip_train.data.bad_data import BadDataPolicy
from clip_train.data.tokenizer import tokenizer_from_files
from clip_train.distributed import launcher_rank
from clip_train.vlm.conversation_source import ConversationSource, read_conversations
from clip_train.vlm.conversations import SceneQuestionSet
from clip_train.vlm.language_model import build_language_model
from clip_train.vlm.model import VisionLanguageModel
from clip_train.vlm.stages import RECIPE_KEY, TOKENIZER_KEY, train_stage
from clip_train.vlm.tower import TowerSource
from clip_train.vlm.vision import ImageFeatures
from clip_train.vlm.vqa import evaluate_questions

log = logging.getLogger(__name__)
STAGES = ("align", "instruct")


def conversation_files(cfg: DictConfig, image_size: int) -> dict[str, str]:
    """{"captions", "train", "test": the user's data (any `ConversationSource` path), or the embedded world's Q/A
    (LLaVA JSON files) written once}."""
    given = {name: cfg.data[name] for name in ("captions", "train", "test")}
    if all(given.values()):
        return given
    if any(given.values()):
        missing = [f"data.{name}" for name, path in given.items() if not path]
        raise ValueError(f"set data.captions, data.train and data.test together (missing {missing}), or none of them")
    scenes = OmegaConf.to_container(cfg.data.scenes)
    scenes = {**scenes, "kinds": tuple(scenes["kinds"]), "image_size": scenes["image_size"] or image_size}
    folder = SceneQuestionSet(**scenes).write(os.path.join(cfg.paths.cache_dir, "vlm"))
    return {name: os.path.join(folder, f"{name}.json") for name in given}


def conversation_sources(cfg: DictConfig, files: dict[str, str]) -> dict[str, ConversationSource]:
    """Every file's units, checked at start-up: a missing path or field stops the run, naming the data.* key."""
    options = {key: cfg.data[key] for key in ("image_folder", "img_key", "caption_key", "rows_per_unit")}
    if not cfg.data.train:  # the embedded Q/A, whose images lie beside its files
        options["image_folder"] = None
    return {
        name: ConversationSource.of(path, f"data.{name}", **options, cache_dir=cfg.paths.cache_dir)
        for name, path in files.items()
    }


def _texts(sources: list[ConversationSource]) -> list[str]:
    """Every question and answer of `sources`, which a word tokenizer learns its vocabulary from."""
    conversations = [c for source in sources for c in read_conversations(source, with_image=False)[0]]
    return [text for c in conversations for turn in c.turns for text in (turn.question, turn.answer)]


def _read_stage(path: str) -> dict:
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if TOKENIZER_KEY not in checkpoint:
        raise ValueError(f"init_from={path}: not a clip_train.vlm stage checkpoint (no {TOKENIZER_KEY})")
    return checkpoint


def _start_weights(cfg: DictConfig):
    """The tokenizer files and model state of `init_from` (a stage checkpoint), or (None, None)."""
    if cfg.init_from is None:
        return None, None
    checkpoint = _read_stage(cfg.init_from)
    state = {k.removeprefix("model."): v for k, v in checkpoint["state_dict"].items()}
    return checkpoint[TOKENIZER_KEY], state


def tower_source(cfg: DictConfig) -> TowerSource:
    """The image tower of `vision.checkpoint` (a CLIP checkpoint or export), or else the one `init_from` (a stage
    checkpoint) carries the recipe of, whose weights `build_vlm` then loads from that checkpoint."""
    if cfg.vision.checkpoint is not None:
        return TowerSource.from_clip(cfg.vision.checkpoint)
    if cfg.init_from is None:
        raise ValueError(
            "vision.checkpoint is required: a clip_train checkpoint or export (python -m clip_train writes one), "
            "unless init_from names a stage checkpoint, whose tower is used"
        )
    recipe = _read_stage(cfg.init_from).get(RECIPE_KEY, {})
    if "tower" not in recipe:
        raise ValueError(f"init_from={cfg.init_from} carries no image-tower recipe (an older stage): set vision.checkpoint")
    return TowerSource.from_recipe(recipe["tower"], f"init_from={cfg.init_from}")


def build_vlm(cfg: DictConfig, source: TowerSource, texts: list[str], blind: bool):
    """(VisionLanguageModel, tokenizer), the LM seeded by `seed` so that the blind baseline starts from the same LM."""
    tokenizer_state, state = _start_weights(cfg)
    L.seed_everything(cfg.seed)
    saved_tokenizer = tokenizer_from_files(tokenizer_state) if tokenizer_state is not None else None
    language_model, tokenizer = build_language_model(cfg.lm, cfg.lm_config, texts, saved_tokenizer)
    if saved_tokenizer is not None:
        tokenizer = saved_tokenizer
    vision = connector = None
    if not blind:
        vision = ImageFeatures(source.tower, cfg.vision.layer, cfg.vision.with_cls, cfg.vision.unlocked_layers)
        connector = instantiate(
            cfg.connector, image_width=vision.width, lm_width=language_model.get_input_embeddings().embedding_dim
        )
    model = VisionLanguageModel(language_model, tokenizer.convert_tokens_to_ids("<image>"), vision, connector)
    if state is not None and not blind:
        missing, unexpected = model.load_state_dict(state, strict=False)
        # the tower's weights may come from vision.checkpoint instead; a tower built from the recipe needs them all
        missing = [name for name in missing if cfg.vision.checkpoint is None or not name.startswith("vision.")]
        if unexpected or missing:
            raise ValueError(
                f"init_from={cfg.init_from} does not fit this VLM (missing {missing[:3]}, unexpected {unexpected[:3]})"
            )
    return model, tokenizer


def _bad_records(stage: str, skipped: dict[str, int]) -> dict[str, float]:
    """{"<stage>/bad_samples": total, "<stage>/bad_samples/<kind>": count} of the kinds met; {} when none were."""
    if not skipped:
        return {}
    return {f"{stage}/bad_samples": float(sum(skipped.values()))} | {
        f"{stage}/bad_samples/{k}": float(n) for k, n in skipped.items()
    }


def run(cfg: DictConfig) -> dict[str, float]:
    if cfg.stage not in (None, *STAGES):
        raise ValueError(f"stage={cfg.stage}: choose align, instruct, or leave it unset for both")
    run_dir = cfg.paths.output_dir
    source = tower_source(cfg)
    files = conversation_files(cfg, source.image_size)
    sources = conversation_sources(cfg, files)
    scratch = cfg.lm is None and cfg.init_from is None  # only a word tokenizer learnt here needs the texts
    texts = _texts([sources["captions"], sources["train"]]) if scratch else []
    trainer_settings = OmegaConf.to_container(cfg.trainer)
    recipe = {name: OmegaConf.to_container(cfg[name]) for name in ("vision", "lm_config", "connector")} | {"lm": cfg.lm}
    recipe["tower"] = source.recipe  # the tower's architecture and preprocessing: the stage loads without the CLIP
    recipe["test_questions"] = os.path.abspath(files["test"])  # what `VisionLanguageTask` scores by default
    bad_data = BadDataPolicy(cfg.data.max_bad_sample_rate, cfg.data.bad_sample_rate_min_items)
    loader = dict(batch_size=cfg.data.batch_size, num_workers=cfg.data.num_workers, seed=cfg.seed, recipe=recipe,
                  shuffle_buffer=cfg.data.shuffle_buffer, bad_data=bad_data)  # fmt: skip
    model, tokenizer = build_vlm(cfg, source, texts, blind=False)
    metrics = {}
    test = None if cfg.stage == "align" else read_conversations(sources["test"])
    for stage in [cfg.stage] if cfg.stage else STAGES:
        started = time.perf_counter()
        data = sources["captions"] if stage == "align" else sources["train"]
        skipped = train_stage(stage, model, tokenizer, data, source.preprocess, cfg.stages[stage], trainer_settings, run_dir,
                              **loader)  # fmt: skip
        metrics[f"time/{stage}_s"] = time.perf_counter() - started
        metrics |= _bad_records(stage, skipped)
    if test is not None:
        metrics |= _bad_records("test", test[1])
        metrics |= evaluate_questions(model, tokenizer, test[0], source.preprocess, cfg.eval.batch_size)
    if cfg.stage is None and cfg.blind_baseline:
        started = time.perf_counter()
        blind, _ = build_vlm(cfg, source, texts, blind=True)
        skipped = train_stage("blind", blind, tokenizer, sources["train"], None, cfg.stages.instruct, trainer_settings,
                              run_dir, **loader)  # fmt: skip
        metrics["time/blind_s"] = time.perf_counter() - started
        metrics |= _bad_records("blind", skipped)
        metrics |= evaluate_questions(blind, tokenizer, test[0], None, cfg.eval.batch_size, prefix="blind/")
    if launcher_rank() == 0:
        with open(os.path.join(run_dir, "metrics.json"), "w") as f:
            json.dump(metrics, f, indent=2, sort_keys=True)
        log.info("VLM metrics: %s", json.dumps(metrics, indent=2, sort_keys=True))
    return metrics
