"""Every option of every config group composes, passes the key check and instantiates."""

import os

import pytest
import torch
from helpers import options
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from clip_train.build import build_datamodule
from clip_train.config import check_config
from clip_train.paths import CONFIG_DIR

SMALL_SYNTHETIC = ["data.synthetic.num_train=64", "data.synthetic.num_val=32", "data.synthetic.samples_per_shard=32"]


def test_groups_exist():
    expected = {"model", "data", "loss", "optim", "trainer", "logger", "callbacks", "eval", "paths", "hydra", "experiment"}
    expected.add("debug")
    assert expected <= set(os.listdir(CONFIG_DIR))
    assert {"tiny", "vit_b32", "vit_b16"} | LARGE_PRESETS <= set(options("model"))


# ViT-L and larger: tens of seconds each to initialise and run on a CPU (so400m alone ~140 s on a loaded 2-core
# machine), so they build in the slow tier
LARGE_PRESETS = {"vit_l14", "vit_l14_336", "vit_h14", "siglip_so400m_384"}


@pytest.mark.parametrize(
    "preset",
    [pytest.param(name, marks=pytest.mark.slow) if name in LARGE_PRESETS else name
     for name in options("model") if name != "clip_pretrained"],  # see test_hf_clip_import
)  # fmt: skip
def test_model_presets_build(compose_config, preset):
    cfg = compose_config(f"model={preset}")
    check_config(cfg)
    model = instantiate(cfg.model, text_tower={"vocab_size": 1000})
    assert model.embed_dim == cfg.model.embed_dim
    if preset.startswith("vit_b"):
        assert (cfg.model.embed_dim, cfg.model.context_length, cfg.model.image_size) == (512, 77, 224)
        assert (cfg.model.text_tower.width, cfg.model.text_tower.layers) == (512, 12)
    images = torch.randn(2, 3, cfg.model.image_size, cfg.model.image_size)
    ids = torch.randint(0, 1000, (2, cfg.model.context_length))
    with torch.no_grad():
        image_features, text_features = model({"image": images, "input_ids": ids, "attention_mask": torch.ones_like(ids)})
    assert image_features.shape == text_features.shape == (2, cfg.model.embed_dim)


def test_pretrained_text_tower_option(compose_config, tmp_path):
    from transformers import BertConfig, BertModel

    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    BertModel(config).save_pretrained(tmp_path / "bert")
    cfg = compose_config("model=test", "model/text_tower=pretrained", f"model.text_tower.name_or_path={tmp_path}/bert")
    check_config(cfg)
    model = instantiate(cfg.model, text_tower={"vocab_size": 100})
    assert type(model.text_tower).__name__ == "PretrainedTextTower"


@pytest.mark.parametrize("option", options("data"))
def test_data_options(compose_config, colour_shards, option):
    extra = SMALL_SYNTHETIC if option == "synthetic" else [f"data.train_shards='{colour_shards}'", "data.num_workers=0"]
    cfg = compose_config(f"data={option}", "model=test", *extra)
    check_config(cfg)
    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    assert batch["image"].shape == (cfg.data.batch_size, 3, 32, 32)


def test_fsdp_strategy_wraps_layers_of_our_towers(compose_config):
    from hydra.utils import get_class

    from clip_train.training.fsdp import FullyShardedStrategy

    cfg = compose_config("trainer=fsdp", "model=test")
    check_config(cfg)
    assert isinstance(instantiate(cfg.trainer.strategy), FullyShardedStrategy)  # runs in tests/test_fsdp.py
    model = instantiate(cfg.model, text_tower={"vocab_size": 100})
    for path in cfg.trainer.strategy.wrap:
        assert any(isinstance(module, get_class(path)) for module in model.modules()), path


@pytest.mark.parametrize("option", options("trainer"))
def test_trainer_options(compose_config, option):
    # GPU options are checked on the CPU: same keys, accelerator swapped
    cfg = compose_config(f"trainer={option}", "trainer.accelerator=cpu")
    check_config(cfg)
    trainer = instantiate(cfg.trainer, logger=False)
    assert trainer.max_steps == cfg.trainer.max_steps
    if option in ("gpu", "ddp", "fsdp"):  # the precision follows the accelerator (clip_train.machine_defaults)
        assert cfg.trainer.precision == "32-true"
        assert compose_config(f"trainer={option}").trainer.precision == "bf16-mixed"  # no GPU here to ask


@pytest.mark.parametrize("option", options("logger"))
def test_logger_options(compose_config, option, tmp_path):
    cfg = compose_config(f"logger={option}", f"paths.output_dir={tmp_path}")
    loggers = [instantiate(node) for node in cfg.logger.values()]
    assert loggers and all(hasattr(logger, "log_metrics") for logger in loggers)


@pytest.mark.parametrize("group", ["loss", "optim", "callbacks"])
def test_other_groups(compose_config, group):
    required = {"distill": ["loss.terms.distill_loss.teacher=TEACHER"]}  # a path the run reads when it starts
    for option in options(group):
        cfg = compose_config(f"{group}={option}", *required.get(option, []) if group == "loss" else [])
        check_config(cfg)
        node = instantiate(cfg[group])
        if group == "optim":
            optimizer = node.optimizer(params=[torch.nn.Parameter(torch.zeros(2))])
            scheduler = node.scheduler(optimizer, total_steps=10)
            optimizer.step()
            scheduler.step()


@pytest.mark.parametrize("option", options("experiment") + [f"debug/{name}" for name in options("debug")])
def test_experiments_and_debug_configs_compose(compose_config, option):
    group, name = option.split("/") if "/" in option else ("experiment", option)
    cfg = compose_config(f"{group}={name}")
    check_config(cfg)
    OmegaConf.to_container(cfg.model, resolve=True, throw_on_missing=False)


def test_misspelt_override_names_the_key(compose_config):
    with pytest.raises(ConfigCompositionException, match="batch_sze"):
        compose_config("data.batch_sze=8")


def test_added_unknown_key_is_caught_before_any_work(compose_config):
    cfg = compose_config("+trainer.max_step=5")
    with pytest.raises(ValueError, match=r"Unknown config key 'trainer.max_step'.*Did you mean 'max_steps'"):
        check_config(cfg)
    cfg = compose_config("+model.image_tower.pol=avg")  # ImageTower takes **timm_kwargs: timm rejects it
    check_config(cfg)


def test_lightning_gradient_accumulation_is_refused(compose_config):
    with pytest.raises(ValueError, match="accumulate_grad_batches must be 1"):
        check_config(compose_config("trainer.accumulate_grad_batches=4"))


@pytest.mark.parametrize("removed", ["~callbacks.evaluation", "~callbacks.evaluation.validation"])
def test_a_monitored_validation_metric_without_validation_tasks_is_refused(compose_config, removed):
    with pytest.raises(ValueError, match=r"callbacks.best_checkpoint monitors val/loss.*~callbacks.best_checkpoint"):
        check_config(compose_config(removed))
    check_config(compose_config(removed, "~callbacks.best_checkpoint"))
    check_config(compose_config(removed, "callbacks.best_checkpoint.monitor=train/loss"))


EVAL_TASKS = {"none": set(), "synthetic": {"zeroshot/shapes", "zeroshot/colours", "compositional"}}


@pytest.mark.parametrize("option", options("eval"))
def test_eval_sets_build_the_evaluation_callback(compose_config, option):
    cfg = compose_config(f"eval={option}")
    check_config(cfg)
    callback = instantiate(cfg.callbacks.evaluation)
    assert set(callback.tasks) == EVAL_TASKS[option]


def _evaluate_tasks(compose_config, *overrides: str) -> dict:
    """{metric prefix: task} of the evaluate config with these overrides, key-checked as `clip_train.evaluate` does."""
    from clip_train.config import check_keys
    from clip_train.eval.tasks import named_tasks

    cfg = compose_config("checkpoint=run.ckpt", *overrides, config_name="evaluate")
    check_keys(cfg)
    return named_tasks(instantiate(cfg.eval.tasks, _convert_="partial"))


def test_evaluate_config_takes_new_zero_shot_sets_by_name(compose_config, tmp_path):
    tasks = _evaluate_tasks(
        compose_config,
        "+eval/task@eval.tasks.zeroshot.mine=zeroshot",
        f"eval.tasks.zeroshot.mine.root={tmp_path}",
        "eval.tasks.zeroshot.shapes.templates=generic",
    )
    assert set(tasks) == EVAL_TASKS["synthetic"] | {"zeroshot/mine", "retrieval"}
    assert (tasks["zeroshot/mine"].root, tasks["zeroshot/mine"].synthetic) == (str(tmp_path), None)
    assert tasks["zeroshot/shapes"].templates == "generic" and tasks["retrieval"].multi_caption is False
    assert set(_evaluate_tasks(compose_config, "eval=none", "~eval.tasks.retrieval")) == set()


def test_a_bad_task_key_is_named_before_any_work(compose_config, tmp_path):
    from hydra.errors import InstantiationException

    mine = "+eval/task@eval.tasks.zeroshot.mine=zeroshot"
    with pytest.raises(ValueError, match=r"Unknown config key 'eval.tasks.zeroshot.mine.rot'.*Did you mean 'root'"):
        _evaluate_tasks(compose_config, mine, f"+eval.tasks.zeroshot.mine.rot={tmp_path}")
    with pytest.raises(InstantiationException, match=r"needs a root[\s\S]*full_key: eval.tasks.zeroshot.mine"):
        _evaluate_tasks(compose_config, mine)
    with pytest.raises(ValueError, match=r"eval.tasks.zeroshot.mine.root = .* is not an evaluation task"):
        _evaluate_tasks(compose_config, f"+eval.tasks.zeroshot.mine.root={tmp_path}")  # no task node
    with pytest.raises(ConfigCompositionException, match="eval.tasks.zeroshot.mine.root"):
        _evaluate_tasks(compose_config, f"eval.tasks.zeroshot.mine.root={tmp_path}")  # a new task needs its node
    with pytest.raises(ValueError, match=r"Unknown config key 'eval.tasks.compositional.kind'"):
        check_config(compose_config("+eval.tasks.compositional.kind=[colour]"))  # training checks them alike
