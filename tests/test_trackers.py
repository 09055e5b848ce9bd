"""Tracker names: ``wandb_project`` and ``run_name`` (the same words in the library config, the
CLI's --wandb-project/--run-name and YAML configs) reach accelerate's ``init_trackers``; the run
name lands in TensorBoard's hparams. W&B is not installed here: its path is checked through the
arguments built for it, without network."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from accelerate import Accelerator
from conftest import assert_user_error, cli

from partialft.errors import PartialFTError
from partialft.training.config import TrainConfig
from partialft.training.trackers import init_args

TRAIN = ["train", "--model", "test_vit", "--no-pretrained", "--img-size", "32", "--batch-size",
         "4", "--dataset", "synthetic:2", "--max-per-split", "8", "--epochs", "1",
         "--warmup-epochs", "0", "--amp", "no", "--no-progress", "--method", "linear"]


def test_wandb_gets_the_project_and_run_name(tmp_path: Path) -> None:
    assert init_args(tmp_path, None, None) == ("partialft", {"wandb": {"dir": str(tmp_path)}})
    project, kwargs = init_args(tmp_path, "cifar100-fapft", "seed-3")
    assert project == "cifar100-fapft"
    assert kwargs == {"wandb": {"dir": str(tmp_path), "name": "seed-3"}}


def test_names_from_yaml_and_flags_reach_the_trackers(capsys, monkeypatch, tmp_path) -> None:
    seen = []
    original = Accelerator.init_trackers

    def spy(self, project_name, config=None, init_kwargs=None):
        seen.append((project_name, config, init_kwargs))
        return original(self, project_name, config=config, init_kwargs=init_kwargs)

    monkeypatch.setattr(Accelerator, "init_trackers", spy)
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"run_name": "linear-seed0"}))
    out = tmp_path / "run"
    assert cli(capsys, *TRAIN, "--config", config, "--log-with", "tensorboard",
               "--wandb-project", "my-project", "--out", out)[0] == 0
    (project, stored, kwargs), = seen
    assert project == "my-project" and kwargs["wandb"]["name"] == "linear-seed0"
    assert stored["run_name"] == "linear-seed0"
    hparams = [yaml.safe_load(p.read_text()) for p in (out / "tensorboard").rglob("hparams.yml")]
    assert hparams and all(h["run_name"] == "linear-seed0" for h in hparams)
    recorded = yaml.safe_load((out / "config.yaml").read_text())
    assert recorded["run_name"] == "linear-seed0" and recorded["wandb_project"] == "my-project"


@pytest.mark.parametrize("name", ["", "a/b", "x" * 129, "two\nlines"])
def test_bad_names_are_one_sentence(capsys, tmp_path, name) -> None:
    with pytest.raises(PartialFTError, match="run_name .* is not valid; use a name of 1 to 128"):
        TrainConfig(run_name=name)
    if name:  # an empty flag means "the default", as for every optional setting
        assert_user_error(*cli(capsys, *TRAIN, "--wandb-project", name, "--out",
                               tmp_path / "r")[::2], "wandb_project", "is not valid")
        assert not (tmp_path / "r").exists()
