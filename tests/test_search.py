"""partialft search (Optuna): trials are real run dirs, pruning, kill -9 resume, shared storage,
bad input. Tiny test_vit on 4-class synthetic data, 2-3 epochs per trial."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import cli, tiny_run

optuna = pytest.importorskip("optuna")

from partialft.errors import PartialFTError  # noqa: E402
from partialft.search import SearchSpace, run_search, space_from_dict  # noqa: E402

RECIPE = ["--model", "test_vit", "--no-pretrained", "--dataset", "synthetic:4", "--img-size",
          "32", "--max-per-split", "40", "--epochs", "3", "--batch-size", "8", "--amp", "no",
          "--hflip", "0", "--warmup-epochs", "0.5", "--log-with", "none", "--threads", "1"]


def angles_file(tmp_path: Path) -> Path:
    """Angles for test_vit's 12 layers (block index as the angle)."""
    path = tmp_path / "angles.json"
    path.write_text(json.dumps({"angles": {f"blocks.{i}.{k}": float(i + (k == "mlp"))
                                           for i in range(6) for k in ("attn", "mlp")}}))
    return path


def table_rows(out: Path) -> list[list[str]]:
    lines = (out / "search.md").read_text().splitlines()
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines
            if ln.startswith("| ") and ln[2].isdigit()]


def storage_study(url: str):
    return optuna.load_study(study_name="partialft-search", storage=url)


def test_search_trains_each_trial_in_its_run_dir_and_reports_the_best_by_val(tmp_path):
    out = tmp_path / "s"
    cfg = tiny_run(out, epochs=2, method="fapft", mode="large", log_with="none")
    space = SearchSpace(modes=("large", "small"), topk=(1, 3), lr=(5e-4, 2e-3))
    record = run_search(cfg, out, space=space, n_trials=4, seed=0,
                        angles=str(angles_file(tmp_path)))
    rows = table_rows(out)
    assert len(rows) == record["n_trials"] == 4
    study = storage_study(f"sqlite:///{out / 'search.db'}")  # the default storage, in --out
    best = study.best_trial
    assert record["best"]["trial"] == best.number
    for trial in study.trials:
        run = out / f"trial-{trial.number:03d}"
        summary = json.loads((run / "summary.json").read_text())
        choice = trial.user_attrs["choice"]
        assert summary["config"]["mode"] == choice["mode"]
        assert summary["config"]["topk"] == str(choice["topk"])
        assert summary["lr"] == pytest.approx(choice["lr"])
        assert trial.value == summary["best_acc"]  # scored on validation, never on test
        assert summary["trainable_params"] == trial.user_attrs["trainable_params"]
        assert set(trial.intermediate_values) == {1, 2}  # one report per epoch
    # only the best row shows a test accuracy; it names the best trial
    tests = {int(r[0].split()[0]): r[6] for r in rows}
    assert "(best)" in next(r[0] for r in rows if int(r[0].split()[0]) == best.number)
    assert [n for n, t in tests.items() if t] == [best.number]
    assert (out / "search.png").stat().st_size > 1000
    # a search dir made for another space is refused; nothing in it is deleted
    before = sorted(p.name for p in out.iterdir())
    with pytest.raises(PartialFTError, match="another space"):
        run_search(cfg, out, space=SearchSpace(topk=(1, 2)), n_trials=4,
                   angles=str(angles_file(tmp_path)))
    assert sorted(p.name for p in out.iterdir()) == before


def test_pruned_trials_stop_early_keep_their_run_dir_and_are_marked(tmp_path):
    out = tmp_path / "p"
    cfg = tiny_run(out, epochs=3, method="fapft", mode="large", log_with="none")
    pruner = optuna.pruners.ThresholdPruner(lower=101.0)  # every trial is pruned at epoch 1
    record = run_search(cfg, out, space=SearchSpace(topk=(1, 2)), n_trials=2,
                        angles=str(angles_file(tmp_path)), pruner=pruner)
    assert record["pruned"] == 2 and record["best"] is None
    for row in table_rows(out):
        assert row[-1] == "yes" and row[7] == "1"  # pruned after epoch 1 of 3
        run = out / f"trial-{int(row[0]):03d}"
        assert not (run / "summary.json").exists() and (run / "metrics.jsonl").is_file()


def test_space_from_yaml_and_flags_and_their_errors(tmp_path, capsys):
    assert space_from_dict({"mode": "small", "topk": 3}).to_dict() == {
        "mode": ["small"], "topk": [3, 3], "lr": [3e-4, 3e-3]}
    for bad, match in (({}, "is empty"), ({"topk": [5, 2]}, "topk"), ({"mode": []}, "mode"),
                       ({"lr": [1e-3, -1]}, "lr"), ({"depth": 3}, "unknown key")):
        with pytest.raises(PartialFTError, match=match):
            space_from_dict(bad)
    angles = angles_file(tmp_path)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    cases = [(["--space", str(empty)], "is empty"),
             (["--search-topk", "4-2"], "topk"),
             (["--search-topk", "1-9"], "smallest homogeneous group"),
             (["--n-trials", "0"], "n-trials 0"),
             (["--storage", "sqlite:////nonexistent-dir/x/search.db"], "cannot be opened")]
    for i, (flags, match) in enumerate(cases):
        out = tmp_path / f"bad{i}"
        code, _, err = cli(capsys, "search", *RECIPE, "--angles", angles, *flags,
                           "--out", out)
        assert code == 2 and match in err and "Traceback" not in err, err
        assert len(err.strip().splitlines()) == 1
        assert not out.exists() or not any(p for p in out.iterdir() if p.name != ".partialft"
                                           and not p.name.startswith(".lock"))


def _search_cmd(out: Path, angles: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "partialft", "search", *RECIPE, "--angles", str(angles),
            "--search-topk", "1-3", "--out", str(out), *extra]


def _env() -> dict[str, str]:
    src = str(Path(__file__).resolve().parents[1] / "src")
    return {**os.environ, "OMP_NUM_THREADS": "1",
            "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}


@pytest.mark.slow
@pytest.mark.parametrize("shared", [False, True], ids=["own-storage", "shared-storage"])
def test_a_search_killed_mid_trial_resumes_that_trial_and_finishes(tmp_path, shared):
    """Rerun at once after kill -9: the killed trial is failed and retried in its run dir, in
    the search dir's own SQLite and in a shared storage (where the rerun knows the trial by its
    run dir in the dir it holds, without waiting for the heartbeat's grace period)."""
    out, angles = tmp_path / "k", angles_file(tmp_path)
    url = f"sqlite:///{tmp_path / 'shared.db'}" if shared else f"sqlite:///{out / 'search.db'}"
    cmd = _search_cmd(out, angles, "--n-trials", "3", *(["--storage", url] if shared else []))
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    metrics = out / "trial-001" / "metrics.jsonl"
    deadline = time.time() + 240
    while not metrics.is_file() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert metrics.is_file(), "the search never reached trial 1"
    os.kill(proc.pid, signal.SIGKILL)  # mid-trial: trial 1 has a resume point, no summary
    proc.wait()
    assert not (out / "trial-001" / "summary.json").exists()
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    study = storage_study(url)
    states = [t.state.name for t in study.trials]
    assert states.count("COMPLETE") == 3 and states.count("FAIL") == 1
    retry = next(t for t in study.trials if t.user_attrs.get("retry_of") == 1)
    assert retry.user_attrs["run_dir"] == str((out / "trial-001").resolve())
    lines = (out / "trial-001" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(ln)["epoch"] for ln in lines] == [1, 2, 3]  # resumed, not restarted
    complete = {Path(t.user_attrs["run_dir"]).name for t in study.trials
                if t.state.name == "COMPLETE"}
    assert {p.name for p in out.glob("trial-*")} == complete  # no second dir for trial 1
    assert len(table_rows(out)) == 3


@pytest.mark.slow
def test_two_workers_share_one_storage_every_trial_runs_once(tmp_path):
    angles, url = angles_file(tmp_path), f"sqlite:///{tmp_path / 'shared.db'}"
    outs = [tmp_path / "w1", tmp_path / "w2"]
    procs = [subprocess.Popen(_search_cmd(o, angles, "--n-trials", "6", "--storage", url),
                              env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for o in outs]
    for p in procs:
        _, err = p.communicate(timeout=400)
        assert p.returncode == 0, err
    study = storage_study(url)
    finished = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) >= 6 and all(t.state.name != "RUNNING" for t in study.trials)
    dirs = [Path(t.user_attrs["run_dir"]) for t in finished]
    assert len(set(dirs)) == len(dirs)  # every trial ran once, in one worker's output
    for d in dirs:
        assert d.parent in outs and (d / "metrics.jsonl").is_file()
    ran = sorted(p.name for o in outs for p in o.glob("trial-*"))
    assert ran == sorted(d.name for d in dirs)
    assert {d.parent for d in dirs} == set(outs)  # both workers took trials
    last = max(outs, key=lambda o: (o / "search.json").stat().st_mtime_ns)
    record = json.loads((last / "search.json").read_text())
    assert record["best"]["trial"] == study.best_trial.number
    best_row = next(r for r in table_rows(last) if "(best)" in r[0])
    assert int(best_row[0].split()[0]) == study.best_trial.number


def _open_at_once(url: str, barrier, results) -> None:
    from partialft.search.storage import open_storage

    barrier.wait()
    try:
        open_storage(url)
        results.put("ok")
    except PartialFTError as exc:
        results.put(str(exc))


def test_workers_opening_a_new_storage_at_once_all_get_it(tmp_path):
    """Workers started together on a new SQLite file race to create Optuna's tables; every one
    of them opens the storage (the race's losers open it again), none is told it cannot."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    for round_ in range(4):
        url = f"sqlite:///{tmp_path / f'race{round_}.db'}"
        barrier, results = ctx.Barrier(4), ctx.Queue()
        procs = [ctx.Process(target=_open_at_once, args=(url, barrier, results))
                 for _ in range(4)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=120)
        assert [results.get(timeout=10) for _ in procs] == ["ok"] * 4
