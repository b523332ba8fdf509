"""Cluster plumbing: the submitit launcher config, who owns requeue, and which checkpoint a restart takes."""

import os
import time

from hydra import compose, initialize_config_dir
from lightning.pytorch.plugins.environments import SLURMEnvironment
from omegaconf import OmegaConf

from clip_train.paths import CONFIG_DIR
from clip_train.train import requeue_plugins, resume_path


def test_slurm_launcher_matches_tasks_to_devices_and_nodes():
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            "train",
            overrides=["hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=3"],
            return_hydra_config=True,
        )
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"].endswith("SlurmLauncher")
    assert (launcher["nodes"], launcher["tasks_per_node"], launcher["gpus_per_node"]) == (3, 4, 4)
    assert launcher["max_num_timeout"] > 0


def test_exactly_one_owner_of_requeue(monkeypatch):
    monkeypatch.delenv("SUBMITIT_EXECUTOR", raising=False)
    assert requeue_plugins() == []  # sbatch + srun: Lightning's SLURMEnvironment requeues
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    (plugin,) = requeue_plugins()
    assert isinstance(plugin, SLURMEnvironment) and not plugin.auto_requeue


def test_resume_takes_the_newest_checkpoint_of_the_run(tmp_path):
    assert resume_path("last", str(tmp_path)) is None  # fresh run
    assert resume_path("/some/where.ckpt", str(tmp_path)) == "/some/where.ckpt"
    (tmp_path / "checkpoints").mkdir()
    last = tmp_path / "checkpoints" / "last.ckpt"
    last.write_bytes(b"")
    assert resume_path("last", str(tmp_path)) == str(last)
    hpc = tmp_path / "hpc_ckpt_1.ckpt"
    hpc.write_bytes(b"")
    later = time.time() + 5
    os.utime(hpc, (later, later))  # saved when SLURM signalled, after the last periodic checkpoint
    assert resume_path("last", str(tmp_path)) == str(hpc)
