"""What partialft may write and delete: a user's file beside or inside any output survives every
verb, with and without --overwrite; output dirs are recognised by their marker; reruns reuse
only what was made the same way; stale temporary files and TensorBoard logs do not pile up."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from partialft.cli import main
from partialft.training.outputs import (
    MARKER,
    check_claim,
    foreign_entries,
    read_marker,
    remove_stale_tmp,
)

TINY = ["--model", "test_vit", "--no-pretrained", "--dataset", "synthetic:4", "--img-size", "32",
        "--max-per-split", "24", "--batch-size", "8", "--epochs", "1", "--amp", "no"]
USER = "thesis.tex"


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two finished linear runs and a full run of the same base, written by the real CLI."""
    d = tmp_path_factory.mktemp("runs")
    for name, method, lr in (("a", "linear", "1e-3"), ("b", "linear", "3e-3"),
                             ("full", "full", "1e-3")):
        argv = ["train", *TINY, "--no-progress", "--method", method, "--lr", lr,
                "--out", str(d / name)]
        assert main(argv) == 0
    return d


# verb -> argv writing to OUT ({r} = the module's run dirs), and the kind of dir it writes
VERBS: dict[str, tuple[list[str], str]] = {
    "train": (["train", *TINY, "--no-progress", "--method", "linear", "--out", "OUT"], "train"),
    "fapft": (["fapft", *TINY, "--no-progress", "--topk", "1", "--mode", "large", "--out",
               "OUT"], "fapft"),
    "select": (["select", *TINY, "--selector", "grad", "--batches", "1", "--out", "OUT"],
               "select"),
    "soup": (["soup", "{r}/a", "{r}/b", "--no-eval", "--out", "OUT"], "soup"),
    "report": (["report", "{r}/a", "{r}/b", "--out", "OUT"], "report"),
    "bench": (["bench", "--model", "test_vit", "--methods", "linear", "--batch-size", "4",
               "--img-size", "32", "--steps", "1", "--warmup", "1", "--out", "OUT"], "bench"),
    "pretrain": (["pretrain", "--model", "test_vit", "--categories", "2", "--steps", "2",
                  "--warmup-steps", "0", "--batch-size", "2", "--val-per-category", "1",
                  "--eval-every", "1", "--checkpoint-every", "1", "--log-every", "1",
                  "--iters", "6", "--chains", "8", "--no-progress", "--out", "OUT"],
                 "pretrain"),
}


def _argv(verb: str, out: Path, runs: Path) -> list[str]:
    return [str(out) if a == "OUT" else a.replace("{r}", str(runs)) for a in VERBS[verb][0]]


@pytest.mark.slow
@pytest.mark.parametrize("verb", sorted(VERBS))
def test_a_user_file_beside_or_inside_an_output_survives(verb, runs, tmp_path, capsys):
    kind = VERBS[verb][1]
    beside = tmp_path / USER
    beside.write_text("years of work")
    out = tmp_path / "out"
    assert main(_argv(verb, out, runs)) == 0, capsys.readouterr().err
    assert read_marker(out)["kind"] == kind
    assert foreign_entries(out, kind) == []  # everything the verb wrote is known as its own
    # again without --overwrite: refused (fapft resumes instead: same settings, nothing to do)
    code = main(_argv(verb, out, runs))
    assert code == (0 if verb == "fapft" else 2)
    # with --overwrite: replaced; the user's file beside it is untouched
    assert main([*_argv(verb, out, runs), "--overwrite"]) == 0, capsys.readouterr().err
    assert beside.read_text() == "years of work"
    # a user's file inside the output dir: --overwrite refuses and deletes nothing
    inside = out / USER
    inside.write_text("notes")
    before = sorted(p.name for p in out.iterdir())
    capsys.readouterr()
    assert main([*_argv(verb, out, runs), "--overwrite"]) == 2
    assert "did not write" in capsys.readouterr().err
    assert inside.read_text() == "notes" and sorted(p.name for p in out.iterdir()) == before


# readers of the module's runs, beside the writers above: none may leave a lock file behind
READERS: dict[str, list[str]] = {
    "eval": ["eval", "{r}/a", "--dataset", "synthetic:4", "--max-images", "8", "--no-progress"],
    "export": ["export", "{r}/a", "--out", "OUT"],
    "angles": ["angles", "{r}/full", "--out", "OUT"],
}


@pytest.mark.slow
@pytest.mark.parametrize("verb", [*sorted(VERBS), *sorted(READERS)])
def test_no_lock_file_is_left_in_outputs_or_inputs(verb, runs, tmp_path, capsys):
    """Finished outputs hold no lock file (an upload of the folder would publish it), and
    neither do the run dirs a verb read."""
    out = tmp_path / ("angles.json" if verb == "angles" else "out")
    argv = READERS[verb] if verb in READERS else VERBS[verb][0]
    argv = [str(out) if a == "OUT" else a.replace("{r}", str(runs)) for a in argv]
    assert main(argv) == 0, capsys.readouterr().err
    assert out.exists() or verb == "eval"
    left = [p for root in (tmp_path, runs) for p in root.rglob(".lock*")]
    assert left == []


@pytest.mark.parametrize("verb", [*sorted(VERBS), "demo"])
def test_a_folder_partialft_did_not_write_is_never_used(verb, runs, tmp_path, capsys):
    out = tmp_path / "mine"
    (out / "code").mkdir(parents=True)
    (out / USER).write_text("years of work")
    argv = _argv(verb, out, runs) if verb != "demo" else ["demo", "--out", str(out),
                                                          "--no-progress"]
    for extra in ([], ["--overwrite"]):
        assert main([*argv, *extra]) == 2
        assert "did not write" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["code", USER]


def test_eval_writes_beside_a_users_file_in_the_run_dir(runs, capsys):
    note = runs / "a" / "my-notes.md"
    note.write_text("keep")
    assert main(["eval", str(runs / "a"), "--dataset", "synthetic:4", "--max-images", "8"]) == 0
    assert note.read_text() == "keep"
    assert "synthetic:4 first 8" in json.loads((runs / "a" / "eval.json").read_text())


def test_angles_out_replaces_only_an_angles_file(runs, tmp_path, capsys):
    base = _base_file(runs, tmp_path)
    own = tmp_path / "angles.json"
    argv = ["angles", str(base), str(runs / "full"), "--model", "test_vit", "--num-classes",
            "4", "--out", str(own)]
    assert main(argv) == 0 and "angles" in json.loads(own.read_text())
    assert main(argv) == 2  # exists: --overwrite needed
    assert main([*argv, "--overwrite"]) == 0
    user = tmp_path / "paper.json"
    user.write_text('{"title": "mine"}')
    capsys.readouterr()
    assert main([*argv[:-1], str(user), "--overwrite"]) == 2
    assert "not a partialft angles file" in capsys.readouterr().err
    assert user.read_text() == '{"title": "mine"}'
    assert main([*argv[:-1], str(base), "--overwrite"]) == 2  # the pretrained input itself
    assert "also an input" in capsys.readouterr().err


def _base_file(runs: Path, tmp_path: Path) -> Path:
    from safetensors.torch import save_file

    from partialft.training.runs import base_state

    path = tmp_path / "base.safetensors"
    save_file({k: v.contiguous() for k, v in base_state(runs / "full").items()}, str(path))
    return path


def test_fapft_reuses_a_stage_only_when_made_the_same_way(tmp_path, capsys):
    out = tmp_path / "g"
    argv = ["fapft", *TINY, "--no-progress", "--topk", "1", "--mode", "small", "--out",
            str(out)]
    assert main([*argv, "--selector", "grad"]) == 0
    scores = (out / "scores.json").read_text()
    capsys.readouterr()
    assert main([*argv, "--selector", "probe-angle"]) == 2
    err = capsys.readouterr().err
    assert "selector='grad'" in err and "--overwrite" in err
    assert (out / "scores.json").read_text() == scores  # the grad scores were not reused
    assert main([*argv, "--selector", "probe-angle", "--overwrite"]) == 0
    assert json.loads((out / "scores.json").read_text())["selector"] == "probe-angle"


def test_fapft_refuses_a_reference_file_that_left_layers_untrained(runs, tmp_path, capsys):
    from safetensors.torch import save_file

    from partialft.training.runs import load_run_model

    model, _ = load_run_model(runs / "a")  # a linear probe: every residual layer unchanged
    path = tmp_path / "linear.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    argv = ["fapft", *TINY, "--no-progress", "--mode", "large", "--reference", str(path), "--out",
            str(tmp_path / "f")]
    assert main(argv) == 2
    assert "exactly at the base weights" in capsys.readouterr().err


def test_a_changed_base_checkpoint_is_refused_on_resume(tmp_path, capsys):
    import timm
    from safetensors.torch import save_file

    ckpt = tmp_path / "base.safetensors"
    save_file(timm.create_model("test_vit", num_classes=4, img_size=32).state_dict(), str(ckpt))
    argv = ["train", *TINY, "--no-progress", "--method", "linear", "--epochs", "2",
            "--checkpoint", str(ckpt), "--out", str(tmp_path / "r")]
    assert main([*argv, "--max-steps", "1"]) == 0
    changed = timm.create_model("test_vit", num_classes=4, img_size=32).state_dict()
    save_file(changed, str(ckpt))
    capsys.readouterr()
    assert main([*argv, "--resume"]) == 2
    assert "base weights differ" in capsys.readouterr().err


def test_stale_temporary_files_are_removed_when_a_run_dir_starts(runs, tmp_path):
    out = tmp_path / "r"
    assert main(["train", *TINY, "--no-progress", "--method", "linear", "--epochs", "2",
                 "--max-steps", "1", "--out", str(out)]) == 0
    stale = [out / ".summary.json.pft-ab12cd_3.tmp", out / "state" / ".state.json.pft-zz9988yy.tmp",
             out / ".bench.pft-k2j3h4g5.tmp"]
    for path in stale[:2]:
        path.write_text("half-written")
    stale[2].mkdir()
    (stale[2] / "run0").mkdir()
    # not names partialft's temporary files have (the second one had, before they were tagged)
    keep = [out / ".my-notes.tmp", out / ".notes.abcdefgh.tmp", out / "state" / ".x.12345678.tmp"]
    for path in keep:
        path.write_text("mine")
    assert main(["train", *TINY, "--no-progress", "--method", "linear", "--epochs", "2",
                 "--out", str(out), "--resume"]) == 0
    assert not any(p.exists() for p in stale)
    assert all(p.read_text() == "mine" for p in keep)


def test_remove_stale_tmp_leaves_marked_subdirs_alone(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / MARKER).write_text(json.dumps({"kind": "train"}))
    live = tmp_path / "sub" / ".delta.safetensors.pft-abcd1234.tmp"  # another run's write
    live.write_text("x")
    remove_stale_tmp(tmp_path)
    assert live.exists()


def test_one_tensorboard_log_per_run_even_across_resumes(tmp_path):
    pytest.importorskip("tensorboard")
    out = tmp_path / "r"
    argv = ["train", *TINY, "--no-progress", "--method", "linear", "--epochs", "3",
            "--out", str(out)]
    assert main([*argv, "--max-steps", "4"]) == 0
    assert main([*argv, "--resume"]) == 0
    logs = [p for p in out.iterdir() if p.is_dir() and p.name != "state"]
    assert [p.name for p in logs] == ["tensorboard"]
    events = list((out / "tensorboard").glob("events.out.tfevents*"))
    assert len(events) == 1
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(events[0]))
    acc.Reload()
    assert [e.step for e in acc.Scalars("val_acc")] == [3, 6, 9]  # all epochs, once each


def test_resume_of_nothing_and_conflicting_flags(tmp_path, capsys):
    argv = ["train", *TINY, "--no-progress", "--out", str(tmp_path / "none")]
    assert main([*argv, "--resume", "--overwrite"]) == 2
    assert "contradict" in capsys.readouterr().err
    (tmp_path / "none").mkdir()
    assert main([*argv, "--resume"]) == 2
    assert "holds no partialft run" in capsys.readouterr().err


def test_check_claim_rules(tmp_path, monkeypatch):
    from partialft.errors import PartialFTError

    monkeypatch.chdir(tmp_path)
    with pytest.raises(PartialFTError, match="parent of the current directory"):
        check_claim(tmp_path.parent, "train", overwrite=True)
    data = tmp_path / "data"
    data.mkdir()
    with pytest.raises(PartialFTError, match="inside the input"):
        check_claim(data / "run", "train", inputs=[data])
    assert check_claim(tmp_path / "new", "train") is False
    run = tmp_path / "run"
    run.mkdir()
    (run / MARKER).write_text(json.dumps({"kind": "report", "settings": {}}))
    (run / "report.md").write_text("# old")
    with pytest.raises(PartialFTError, match="partialft report directory, not a train one"):
        check_claim(run, "train", reuse=True)
    # a verb's --overwrite replaces only its own kind of output
    with pytest.raises(PartialFTError, match="replaces only an earlier train output"):
        check_claim(run, "train", overwrite=True)


def test_only_recorded_unchanged_files_are_partialfts(tmp_path):
    from partialft.training.outputs import write_marker
    from partialft.utils.io import atomic_write_text

    run = tmp_path / "run"
    run.mkdir()
    write_marker(run, "train")
    for name in ("config.yaml", "summary.json", "state/state.json", "state/tensors-12.safetensors",
                 "tensorboard/123.4/hparams.yml"):
        atomic_write_text(run / name, "x")
    (run / ".delta.safetensors.pft-k2j3h4g5.tmp").write_text("half")
    assert foreign_entries(run, "train") == []
    (run / "state" / "notes.txt").write_text("mine")
    (run / "summary.json.bak").write_text("mine")
    (run / "tensorboard" / "events.out.tfevents.1.vm").write_text("mine")  # a name, not a record
    (run / "config.yaml").write_text("edited")
    assert [p.relative_to(run).as_posix() for p in foreign_entries(run, "train")] == [
        "config.yaml", "state/notes.txt", "summary.json.bak",
        "tensorboard/events.out.tfevents.1.vm"]


def test_a_safetensors_file_named_pth_is_read_as_safetensors(tmp_path, capsys):
    import timm
    from safetensors.torch import save_file

    path = tmp_path / "weights.pth"
    save_file(timm.create_model("test_vit").state_dict(), str(path))
    assert main(["plan", "--model", "test_vit", "--method", "attn", "--checkpoint",
                 str(path)]) == 0


def test_yaml_topk_may_be_a_list(tmp_path):
    from partialft.training.config_files import load_config

    (tmp_path / "c.yaml").write_text("method: fapft\nmode: large\ntopk: [0, 0, 6, 2]\n")
    assert load_config(tmp_path / "c.yaml").topk == "0,0,6,2"


def test_cached_hub_weights_load_without_any_network(tmp_path, monkeypatch):
    """Weights in the Hugging Face cache are used directly: no HEAD request, no retries."""
    import timm
    from huggingface_hub import constants
    from safetensors.torch import save_file

    import partialft.utils.net
    from partialft.models import create_model

    repo = timm.models.get_pretrained_cfg("test_vit").hf_hub_id
    snapshot = tmp_path / f"models--{repo.replace('/', '--')}" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (tmp_path / f"models--{repo.replace('/', '--')}" / "refs").mkdir()
    (tmp_path / f"models--{repo.replace('/', '--')}" / "refs" / "main").write_text("abc123")
    torch.manual_seed(1)
    weights = timm.create_model("test_vit").state_dict()
    save_file(weights, str(snapshot / "model.safetensors"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(partialft.utils.net, "reachable", _no_network)
    model = create_model("test_vit", pretrained=True)
    assert torch.equal(model.state_dict()["blocks.0.attn.qkv.weight"],
                       weights["blocks.0.attn.qkv.weight"])


def test_uncached_hub_weights_fail_fast_offline(monkeypatch, tmp_path):
    from huggingface_hub import constants

    import partialft.utils.net
    from partialft.errors import PartialFTError
    from partialft.models import create_model

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(partialft.utils.net, "reachable", lambda url, timeout=3.0: False)
    with pytest.raises(PartialFTError, match="cannot be reached; without network, pass "
                                             "checkpoint=FILE") as err:
        create_model("test_vit", pretrained=True)
    assert "pretrained=False" in str(err.value) and "--" not in str(err.value)
    assert "pass --checkpoint FILE (weights on disk) or --no-pretrained" in err.value.for_cli()


def _no_network(url: str, timeout: float = 3.0) -> bool:
    raise AssertionError(f"tried to reach {url}")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into read-only folders")
def test_an_unwritable_out_is_one_line(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert main(["train", *TINY, "--no-progress", "--out", str(locked / "run")]) == 2
        assert "cannot create" in capsys.readouterr().err
    finally:
        locked.chmod(0o700)


def test_written_files_follow_the_umask(tmp_path):
    from partialft.utils.io import atomic_write_json

    old = os.umask(0o022)
    try:
        path = atomic_write_json(tmp_path / "a.json", {"x": 1})
        assert path.stat().st_mode & 0o777 == 0o644  # teammates can read it
        # safetensors recreates its file 0600; the weights must be readable like the rest
        from partialft.training.checkpoints import save_tensors
        weights = save_tensors(tmp_path / "w.safetensors", {"w": torch.zeros(2)}, {})
        assert weights.stat().st_mode & 0o777 == 0o644
        os.umask(0o077)
        assert atomic_write_json(tmp_path / "b.json", {}).stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)
