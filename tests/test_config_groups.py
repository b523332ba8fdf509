"""Each config group reads only its own keys and `paths`/`seed`: a value two groups need has one owner, and the
code that builds the others hands it to them (`clip_train.build`). Composes every experiment and the three
primary configs, and lists each interpolation whose key lies in another group."""

import os
import re

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, ListConfig, OmegaConf

from clip_train.paths import CONFIG_DIR

EXPERIMENTS = sorted(name[: -len(".yaml")] for name in os.listdir(os.path.join(CONFIG_DIR, "experiment")))
COMPOSED = [("train", ()), ("evaluate", ()), ("evaluate", ("benchmark=all",)), ("curate", ())] + [
    ("train", (f"experiment={e}",)) for e in EXPERIMENTS
]
SHARED = {"paths", "seed"}  # every group may read these

# (the reading key or the node it lies in, group read): why the crossing stays
ALLOWED = {
    ("callbacks.evaluation.tasks", "eval"): "the evaluation callback runs the tasks the eval group lists, which owns them",
    ("benchmark", "eval"): "a benchmark suite runs with the eval group's batch size, workers and progress bar",
    ("eval.tasks.compositional", "data"): "the compositional task draws the scenes just past the embedded training "
    "set's (data.synthetic), so it reads that set's seed, count and image size to score held-out scenes",
    ("eval.zeroshot.classes", "data"): "experiment=flyp scores the held-out class folder it trains against zero-shot: "
    "the experiment ties that set to the validation path the user gives as data.val",
    ("data.num_workers", "trainer"): "cc3m_vit_b16 gives each training process its share of the CPUs: the trainer "
    "owns how many processes (devices) share the machine",
}

# a key an interpolation reads: ${a.b}, ${..a} (relative: its own group), and oc.select's first argument
REFERENCE = re.compile(r"\$\{(?:oc\.select:)?(\.*[A-Za-z_][\w.]*)\s*[},]")


def interpolations(node, path: str = ""):
    """(dotted path, raw interpolation string) of every unresolved string value under `node`."""
    if isinstance(node, DictConfig):
        for key in node.keys():
            yield from interpolations(node._get_node(key), f"{path}.{key}")
    elif isinstance(node, ListConfig):
        for index in range(len(node)):
            yield from interpolations(node._get_node(index), f"{path}[{index}]")
    else:
        value = node._value()
        if isinstance(value, str) and "${" in value:
            yield path.lstrip("."), value


def crossings(cfg: DictConfig) -> list[tuple[str, str, str]]:
    """(key, interpolation, group read) for each interpolation that reads another group than its own."""
    found = []
    for path, text in interpolations(cfg):
        group = re.split(r"[.\[]", path)[0]
        for key in REFERENCE.findall(text):
            if key.startswith("."):
                continue  # relative: within its own node
            read = key.split(".")[0]
            if read not in (group, *SHARED):
                found.append((path, text, read))
    return found


def allowed(path: str, read: str) -> bool:
    """Whether ALLOWED lists the crossing of `path` (the key or a node above it) into group `read`."""
    return any(read == group and (path == key or path.startswith(key + ".")) for key, group in ALLOWED)


def composed(primary: str, overrides: tuple) -> DictConfig:
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(primary, overrides=list(overrides))


@pytest.mark.parametrize("primary, overrides", COMPOSED, ids=[f"{p}:{','.join(o)}" for p, o in COMPOSED])
def test_no_group_reads_another(primary, overrides):
    cfg = composed(primary, overrides)
    unexplained = [f"{path}: {text}" for path, text, read in crossings(cfg) if not allowed(path, read)]
    assert not unexplained, "config groups read each other:\n" + "\n".join(unexplained)


def test_the_check_finds_a_crossing():
    cfg = OmegaConf.create({"data": {"size": "${model.image_size}", "seed": "${seed}", "own": "${..size}"}, "model": {}})
    assert crossings(cfg) == [("data.size", "${model.image_size}", "model")]
    assert allowed("eval.tasks.compositional.scenes", "data") and not allowed("eval.tasks.retrieval.shards", "data")


# the data keys that used to read other groups, as they read them before the model and loss handed them over
READ_BEFORE = {
    "image_size": "${model.image_size}",
    "context_length": "${model.context_length}",
    "text_hard_negatives": "${oc.select:loss.text_hard_negatives,"
    "${oc.select:loss.terms.contrastive_loss.text_hard_negatives,0}}",
}
BUILT = [(f"experiment={e}",) for e in EXPERIMENTS] + [
    (),
    ("model=coca_test", "loss=coca", "loss.terms.contrastive_loss.text_hard_negatives=2"),
    ("loss=siglip", "loss.text_hard_negatives=1", "data.image_size=48", "data.context_length=16"),  # typed: they win
]


def data_as_before(cfg: DictConfig) -> dict:
    """`cfg.data` resolved as the configs resolved it when the data group read the model and loss groups."""
    before = cfg.copy()
    for key, interpolation in READ_BEFORE.items():
        if cfg.data[key] is None:  # an override typed on the command line replaced the interpolation
            before.data[key] = interpolation
    return OmegaConf.to_container(before.data, resolve=True, throw_on_missing=False)


def model_as_before(cfg: DictConfig, tokenizer, from_source: bool) -> dict:
    """The model config train.py built before: resolved, then patched from the data module's tokenizer (the vocabulary
    size only when the token table is not a `model.init_from` source's)."""
    model = OmegaConf.to_container(cfg.model, resolve=True, throw_on_missing=False)
    text = model["text_tower"]
    if not from_source:
        text["vocab_size"] = len(tokenizer)
    if "eos_token_id" in text:
        text["eos_token_id"] = tokenizer.eos_token_id
    if "pad_token_id" in text and text["pad_token_id"] is None:
        text["pad_token_id"] = tokenizer.pad_token_id
    return model


@pytest.mark.parametrize("overrides", BUILT, ids=[",".join(o) or "default" for o in BUILT])
def test_the_data_and_model_are_built_from_the_same_arguments_as_before(compose_config, overrides, tmp_path):
    from helpers import caption_tokenizer
    from hf_clip_models import clip_tokenizer, save_small_clip

    from clip_train.build import data_build_config, model_build_config
    from clip_train.interop.warm_start import start_from_pretrained

    cfg = compose_config(*overrides)
    from_source = "_target_" not in cfg.model  # model=clip_pretrained (experiment=flyp): the architecture is a source's
    if from_source:
        save_small_clip(str(tmp_path / "clip"))
        cfg, _ = start_from_pretrained(compose_config(*overrides, f"model.init_from={tmp_path / 'clip'}"))
    assert OmegaConf.to_container(data_build_config(cfg), throw_on_missing=False) == data_as_before(cfg)
    tokenizer = clip_tokenizer() if from_source else caption_tokenizer()
    built = model_build_config(cfg.model, tokenizer, from_source=from_source)
    assert OmegaConf.to_container(built, throw_on_missing=False) == model_as_before(cfg, tokenizer, from_source)
    assert from_source or OmegaConf.is_missing(cfg.model.text_tower, "vocab_size")  # the run's config stays as composed
