"""A run dir read back is the run that was trained: a delta copied in from another run, soups
of other tasks, angles of runs that trained no residual weight, references that do not exist,
report rows split by settings that change no result, changed base checkpoints (issue 21)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from conftest import assert_user_error, cli
from read_runs import TINY, copy_run, shared_runs

from partialft.cli import main


@pytest.fixture
def runs() -> dict[str, Path]:
    return shared_runs()


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_summary_records_the_identity_of_the_delta_and_full_model(runs) -> None:
    summary = json.loads((runs["full"] / "summary.json").read_text())
    assert summary["delta_sha256"] == _sha(runs["full"] / "delta.safetensors")
    attn = json.loads((runs["attn"] / "summary.json").read_text())
    assert attn["full_sha256"] == _sha(runs["attn"] / "model.safetensors")


def _verb(name: str, run: Path, tmp: Path, other: Path | None = None) -> list[object]:
    return {"eval": ["eval", run, "--dataset", "synthetic:4", "--no-progress"],
            "export": ["export", run, "--out", tmp / "export"],
            "angles": ["angles", run],
            "soup": ["soup", run, other or run, "--out", tmp / "soup", "--no-eval"],
            "multitask": ["multitask", run, "--iters", "1", "--batch-size", "2"]}[name]


@pytest.mark.parametrize("verb", ["eval", "export", "angles", "soup", "multitask"])
@pytest.mark.parametrize("source", ["full_s1_threads", "linear", "folder4", "convnext"])
def test_a_delta_copied_from_another_run_is_refused(capsys, tmp_path, runs, verb, source) -> None:
    """Same model and method (another seed), another method, another dataset, another model:
    each delta laid into a copy of the full run is refused, never evaluated as that run."""
    run = copy_run(runs, "full", tmp_path)
    shutil.copy(runs[source] / "delta.safetensors", run / "delta.safetensors")
    code, _, err = cli(capsys, *_verb(verb, run, tmp_path, runs["full"]))
    assert_user_error(code, err, str(run / "delta.safetensors"), "copied in from another run")
    assert not (tmp_path / "export").exists() and not (tmp_path / "soup").exists()


@pytest.mark.parametrize("source", ["linear", "convnext"])
def test_a_copied_delta_is_refused_by_what_it_names_when_no_hash_was_recorded(
        capsys, tmp_path, runs, source) -> None:
    """Runs written before the summary recorded the delta's SHA-256: the model, classes and
    method the delta's metadata names must match the summary's."""
    run = copy_run(runs, "full", tmp_path)
    summary = json.loads((run / "summary.json").read_text())
    del summary["delta_sha256"]
    (run / "summary.json").write_text(json.dumps(summary))
    shutil.copy(runs[source] / "delta.safetensors", run / "delta.safetensors")
    code, _, err = cli(capsys, *_verb("eval", run, tmp_path))
    assert_user_error(code, err, "copied in from another run",
                      "method" if source == "linear" else "model")


@pytest.mark.parametrize("name", ["full", "attn", "linear", "lora", "adapter"])
def test_the_run_itself_still_evaluates(capsys, runs, name) -> None:
    code, out, err = cli(capsys, "eval", runs[name], "--dataset", "synthetic:4",
                         "--no-progress", "--json")
    assert code == 0, err
    assert "acc" in out


@pytest.mark.parametrize("other,setting", [("folder4", "dataset"),
                                           ("bilinear", "interpolation"),
                                           ("lora", "structure")])
def test_a_soup_refuses_ingredients_of_another_task_or_preprocessing(
        capsys, tmp_path, runs, other, setting) -> None:
    code, _, err = cli(capsys, "soup", runs["full"], runs[other], "--out", tmp_path / "s",
                       "--no-eval")
    assert_user_error(code, err, setting, str(runs["full"]), str(runs[other]))
    assert not (tmp_path / "s").exists()


def test_a_soup_of_two_seeds_of_one_recipe_is_still_made(capsys, tmp_path, runs) -> None:
    code, _, err = cli(capsys, "soup", runs["full"], runs["full_s1_threads"], "--out",
                       tmp_path / "s", "--no-eval")
    assert code == 0, err
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert summary["delta_sha256"] == _sha(tmp_path / "s" / "delta.safetensors")


def _select(tmp: Path, reference: Path) -> list[object]:
    tiny = [a for a in TINY if a != "--no-progress"]  # select shows no progress bar
    return ["select", *tiny, "--selector", "angle", "--mode", "large", "--reference", reference,
            "--out", tmp / "sel"]


def test_select_never_trains_into_a_missing_reference(capsys, tmp_path) -> None:
    missing = tmp_path / "elsewhere" / "full"
    code, _, err = cli(capsys, *_select(tmp_path, missing))
    assert_user_error(code, err, f"--reference {missing} does not exist")
    assert not missing.exists() and not missing.parent.exists()


def test_select_refuses_a_reference_that_is_not_a_finished_run(capsys, tmp_path) -> None:
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.yaml").write_text("model: test_vit\n")
    code, _, err = cli(capsys, *_select(tmp_path, tmp_path / "half"))
    assert_user_error(code, err, "is not a finished run dir")


@pytest.mark.parametrize("name", ["linear", "attn", "lora", "adapter"])
def test_select_refuses_a_reference_that_left_residual_layers_untrained(
        capsys, tmp_path, runs, name) -> None:
    """Angles of layers a run did not train are 0: a linear probe, an attention-only run or a
    PEFT baseline would give an all-zero (or half-zero) ranking and a recommendation."""
    code, _, err = cli(capsys, *_select(tmp_path, runs[name]))
    assert_user_error(code, err, str(runs[name]), "angles need a run that trained those layers")


def test_angles_refuse_a_run_of_another_architecture_than_the_weights(capsys, runs) -> None:
    code, _, err = cli(capsys, "angles", runs["base"], runs["convnext"], "--model", "test_vit",
                       "--num-classes", "4")
    assert_user_error(code, err, "test_convnext", "--model test_vit")


def test_angles_refuse_a_delta_whose_tensors_the_weights_lack(capsys, tmp_path, runs) -> None:
    """Same name check passed (--model test_convnext), weights of another architecture."""
    code, _, err = cli(capsys, "angles", runs["base"], runs["convnext"], "--model",
                       "test_convnext", "--num-classes", "4")
    assert code == 2 and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err


def test_angles_refuse_adapter_runs_whose_layers_are_untouched(capsys, runs) -> None:
    """Decision (docs/reliability.md): adapters and VPT are refused (nothing to merge)."""
    for argv in (["angles", runs["adapter"]],
                 ["angles", runs["base"], runs["adapter"], "--model", "test_vit",
                  "--num-classes", "4"]):
        code, _, err = cli(capsys, *argv)
        assert_user_error(code, err, "'adapter'", "angles would all be 0")


def test_angles_of_a_lora_run_are_measured_on_the_merged_weights(capsys, runs) -> None:
    """LoRA (and SSF) fold into the weights they modulate (LoRA's default targets cover every
    residual layer): no angle is 0; the run alone and PRETRAINED FINETUNED agree."""
    code, out, err = cli(capsys, "angles", runs["lora"], "--json")
    assert code == 0, err
    alone = json.loads(out)["angles"]
    assert alone and all(v > 0 for v in alone.values())
    code, out, err = cli(capsys, "angles", runs["base"], runs["lora"], "--model", "test_vit",
                         "--num-classes", "4", "--json")
    assert code == 0, err
    assert json.loads(out)["angles"] == pytest.approx(alone)


def test_angles_of_a_full_run_are_not_zero(capsys, runs) -> None:
    code, out, err = cli(capsys, "angles", runs["full"], "--json")
    assert code == 0, err
    assert all(v > 0 for v in json.loads(out)["angles"].values())


def test_report_does_not_split_seeds_that_differ_only_in_threads_or_workers(runs) -> None:
    from partialft.analysis.rows import group_runs, load_inputs

    found, _ = load_inputs([runs["full"], runs["full_s1_threads"]])
    assert found[0].summary["config"]["threads"] != found[1].summary["config"]["threads"]
    rows = group_runs(found)
    assert len(rows) == 1 and rows[0].n == 2 and rows[0].varies == {}


def test_not_recipe_names_every_setting_that_cannot_change_a_result() -> None:
    from partialft.training.config import TrainConfig
    from partialft.training.runs import NOT_RECIPE

    fields = set(TrainConfig.__dataclass_fields__)
    result_free = {"seed", "out", "max_steps", "checkpoint_every", "log_with", "wandb_project",
                   "run_name", "keep_state", "threads", "workers", "save_full"}
    assert result_free <= fields and set(NOT_RECIPE) == result_free


def test_allow_base_mismatch_works_for_a_checkpoint_base(capsys, tmp_path, runs) -> None:
    """A checkpoint file changed since the run: refused, unless --allow-base-mismatch (then a
    warning), as for timm pretrained weights."""
    from safetensors.torch import load_file, save_file

    base = tmp_path / "base.safetensors"
    shutil.copy(runs["base"], base)
    run = tmp_path / "run"
    assert main(["train", *TINY, "--checkpoint", str(base), "--method", "linear", "--out",
                 str(run)]) == 0
    capsys.readouterr()
    changed = load_file(str(base))
    changed["cls_token"] += 1.0
    save_file(changed, str(base))
    evaluate = ["eval", run, "--dataset", "synthetic:4", "--no-progress"]
    code, _, err = cli(capsys, *evaluate)
    assert_user_error(code, err, "changed since the run used it")
    for argv in (evaluate, ["angles", run], ["export", run, "--out", tmp_path / "e"]):
        code, _, err = cli(capsys, *argv, "--allow-base-mismatch")
        assert code == 0, err
        assert "warning" in err and "--allow-base-mismatch" in err


def test_a_delta_whose_tensors_are_not_its_selection_is_refused(capsys, tmp_path, runs) -> None:
    """The attention-only run's metadata laid on the full run's tensors (and the summary made to
    agree): the delta trains layers its selection does not name."""
    from safetensors.torch import load_file, save_file

    from partialft.training.checkpoints import read_metadata

    run = copy_run(runs, "attn", tmp_path)
    (run / "model.safetensors").unlink()
    meta = read_metadata(runs["attn"] / "delta.safetensors")
    save_file(load_file(str(runs["full"] / "delta.safetensors")), str(run / "delta.safetensors"),
              metadata={k: json.dumps(v) if not isinstance(v, str) else v
                        for k, v in meta.items()})
    summary = json.loads((run / "summary.json").read_text())
    summary["delta_sha256"] = _sha(run / "delta.safetensors")
    del summary["full_sha256"]
    (run / "summary.json").write_text(json.dumps(summary))
    code, _, err = cli(capsys, "eval", run, "--dataset", "synthetic:4", "--no-progress")
    assert_user_error(code, err, "did not train", "different runs")
