"""Research ergonomics: a sweep with the submitit launcher, and the LiT recipe's local pretrained weights
(a multirun on one machine: tests/test_multirun_summary.py)."""

import pytest
import timm
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf
from omegaconf.errors import MissingMandatoryValue

from clip_train.paths import CONFIG_DIR


def test_submitit_launcher_composes_with_the_sweep():
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            "train",
            overrides=["experiment=siglip_vs_infonce", "loss=siglip", "hydra/launcher=slurm", "hydra.sweep.dir=/runs/x"],
            return_hydra_config=True,
        )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.submitit_folder.startswith("/runs/x/")  # every job's logs under its sweep
    assert (launcher.nodes, launcher.tasks_per_node) == (cfg.trainer.num_nodes, cfg.trainer.devices)
    assert OmegaConf.to_container(cfg.hydra.sweep)["subdir"] == "${hydra.job.num}"  # one directory per job
    assert cfg.loss._target_ == "clip_train.objectives.SigLip"


def test_lit_needs_local_weights_and_locks_the_pretrained_tower(tmp_path):
    def lit_model(*overrides):
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            cfg = compose("train", overrides=["experiment=lit", "model=test", *overrides])
        model_cfg = OmegaConf.create(OmegaConf.to_container(cfg.model, resolve=True, throw_on_missing=False))
        model_cfg.text_tower.vocab_size = 100
        return instantiate(model_cfg)

    with pytest.raises(MissingMandatoryValue, match="pretrained_cfg_overlay.file"):
        lit_model("model.image_tower.model_name=test_vit")  # offline and no file: stops, naming the key
    torch.manual_seed(1)
    reference = timm.create_model("test_vit", img_size=32, patch_size=8, num_classes=0)
    torch.save(reference.state_dict(), tmp_path / "weights.pth")
    model = lit_model(
        "model.image_tower.model_name=test_vit", f"model.image_tower.pretrained_cfg_overlay.file={tmp_path}/weights.pth"
    )
    for name, tensor in reference.state_dict().items():
        torch.testing.assert_close(model.image_tower.trunk.state_dict()[name], tensor, msg=name)
    assert not any(p.requires_grad for p in model.image_tower.trunk.parameters())
    assert model.image_tower.projection.weight.requires_grad
