"""``run_search``: an Optuna search over FAPFT's choices, each trial a real training run.

Layout of ``out`` (a partialft output of kind ``search``; every trial is one of its stages)::

    full/            full fine-tuning for the angles (unless angles or a reference are given)
    angles.json      the fine-tuned angles every trial selects from
    trial-NNN/       one run dir per trial (NNN = Optuna's trial number)
    search.db        the Optuna study (default SQLite storage)
    search.md        every trial's choices, parameters, val acc, wall time, pruned or not
    search.json      the same, machine-readable, plus the best trial
    search.png       val accuracy vs trainable parameters (pruned trials faded)

The objective is the trial's best validation accuracy; the test split is never used to
choose (search.md gives the test accuracy of the best trial only). Pruning: Optuna's
``MedianPruner`` on the per-epoch validation accuracy (once ``PRUNE_STARTUP`` trials have
finished, from epoch ``PRUNE_WARMUP`` on, a trial whose accuracy is below the median of the
earlier trials at the same epoch stops; its run dir stays, resumable).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from partialft.errors import PartialFTError, option_error
from partialft.search.space import SearchSpace
from partialft.search.storage import default_url, open_storage, optuna_module
from partialft.training.config import TrainConfig, config_inputs

STUDY_NAME = "partialft-search"
PRUNE_STARTUP = 4
PRUNE_WARMUP = 2


def run_search(cfg: TrainConfig, out: str | Path, *, space: SearchSpace | None = None,
               n_trials: int = 20, timeout: float | None = None, seed: int = 0,
               storage: str | None = None, study_name: str = STUDY_NAME,
               angles: str | None = None, reference: str | None = None,
               overwrite: bool = False, progress: bool = False,
               pruner: Any | None = None) -> dict[str, Any]:
    """Search FAPFT's mode, top-k per group and learning rate on ``cfg``'s recipe and data.

    ``space``: what to sample (default: both modes, top-k 1-6, lr 3e-4..3e-3).
    ``n_trials``: finish when this many trials of the study are complete or pruned (with
    several workers, at least this many). ``timeout``: seconds after which this process
    starts no new trial. ``seed``: the TPE sampler's seed. ``storage``: an Optuna storage URL
    (default ``sqlite:///OUT/search.db``) or ``journal:PATH``; several processes may share one,
    each with its own ``out``. ``angles``: an angles file to select from, or ``reference``: a
    finished full fine-tuning run dir to compute them from; with neither, ``out/full/`` is
    trained first. ``pruner``: an Optuna pruner instead of the default median pruner.
    ``study_name``: the study's name in the storage (workers of one search share it).
    ``overwrite``: replace a search ``out`` that partialft wrote before (only its recorded
    files). ``progress``: progress bars for each trial's training.
    Returns the search's record (``search.json``).
    """
    from partialft.training.reruns import finish, open_output

    space = space or SearchSpace()
    _check_args(n_trials, timeout, storage)
    out = Path(out)
    recipe = {k: v for k, v in cfg.to_dict().items() if k not in ("out", "threads")}
    settings = {"recipe": recipe, "space": space.to_dict(), "study": study_name,
                "storage": storage, "seed": seed, "angles": angles, "reference": reference}
    _check_same_space(out, space, overwrite)
    classes = _check_topk(cfg, space)  # before anything is written
    if storage is not None:
        open_storage(storage)  # a URL that cannot be opened: refused before any work
    with open_output(out, "search", settings, overwrite=overwrite,
                     inputs=[*config_inputs(cfg), angles, reference]) as folder:
        angles_path = _angles(cfg, out, angles, reference, progress)
        base = dataclasses.replace(cfg, method="fapft", angles=str(angles_path), layers=None)
        study = _study(out, storage, study_name, space, recipe, seed, pruner)
        _requeue_killed(study, None if storage is None else out, n_trials)
        _optimize(study, base, out, space, n_trials, timeout, progress, classes)
        from partialft.search.report import write_report

        record = write_report(study, out, cfg, reference or _full_dir(out))
        if storage is None:
            from partialft.utils.io import record_file

            record_file(out / "search.db")
        if _finished(study) >= n_trials:
            finish(folder)
    return record


def _check_args(n_trials: int, timeout: float | None, storage: str | None) -> None:
    if not isinstance(n_trials, int) or isinstance(n_trials, bool) or n_trials < 1:
        raise PartialFTError(f"n_trials {n_trials!r} is not valid; use a whole number of at "
                             "least 1, such as 12.")
    if timeout is not None and not (isinstance(timeout, (int, float)) and timeout > 0):
        raise PartialFTError(f"timeout {timeout!r} is not valid; use a number of seconds above "
                             "0, or leave it out.")
    if storage is not None and not storage.strip():
        raise PartialFTError("storage '' is empty; give an Optuna storage URL such as "
                             "sqlite:///search.db, or leave it out for OUT/search.db.")


def _check_same_space(out: Path, space: SearchSpace, overwrite: bool) -> None:
    """A search dir made for another space is refused (before anything is opened)."""
    from partialft.training.outputs import read_marker

    marker = read_marker(out) if out.is_dir() and not overwrite else None
    if marker is None or marker["kind"] != "search":
        return
    recorded = (marker.get("settings") or {}).get("space")
    if recorded is not None and recorded != space.to_dict():
        raise PartialFTError(f"out {out} holds a search over another space ({recorded}); give "
                             "the same space to continue it, or another out (or overwrite).")


def _full_dir(out: Path) -> str | None:
    return str(out / "full") if (out / "full" / "summary.json").is_file() else None


def _angles(cfg: TrainConfig, out: Path, angles: str | None, reference: str | None,
            progress: bool) -> Path:
    """The angles file trials select from: given, or measured from a (trained) full run."""
    if angles is not None:
        if not Path(angles).is_file():
            raise PartialFTError(f"angles {angles} is not a file; give an angles JSON from "
                                 "'partialft angles', or a reference run dir.")
        return Path(angles)
    from partialft.workflows.fapft import check_reference, write_angles

    path = out / "angles.json"
    if reference is not None:
        check_reference(reference, cfg)
    if not path.is_file():
        full_dir = Path(reference) if reference else out / "full"
        if reference is None:
            from partialft.training.train import train

            full = dataclasses.replace(cfg, method="full", out=str(full_dir), layers=None,
                                       angles=None, topk=None, mode=None)
            train(full, resume=True, progress=progress)
        write_angles(cfg, path, full_dir, reference)
    return path


def _check_topk(cfg: TrainConfig, space: SearchSpace) -> int:
    """Refuse a top-k range past a group's size; returns the data's number of classes."""
    from partialft.core.layers import find_layers
    from partialft.selectors.task import load_task

    task = load_task(cfg)
    model = _meta_model(cfg, task.data.num_classes)
    groups = find_layers(model, cfg.layer_spec).groups()
    space.check_layers({name: len(ids) for name, ids in groups.items()})
    return int(task.data.num_classes)


def _meta_model(cfg: TrainConfig, num_classes: int) -> Any:
    import torch

    from partialft.models import create_model

    with torch.device("meta"):  # counting needs no memory
        return create_model(cfg.model, num_classes=num_classes, img_size=cfg.img_size)


def trainable_params(cfg: TrainConfig, num_classes: int) -> int:
    """What a FAPFT run of ``cfg`` trains (counted on the meta device, before it runs)."""
    from partialft.core.angles import load_angles
    from partialft.core.freeze import apply_selection
    from partialft.core.layers import find_layers
    from partialft.core.select import select_layers

    model = _meta_model(cfg, num_classes)
    layer_map = find_layers(model, cfg.layer_spec)
    selection = select_layers(layer_map, "fapft", angles=load_angles(cfg.angles, layer_map),
                              topk=cfg.topk, mode=cfg.mode)
    return apply_selection(model, layer_map, selection,
                           train_non_residual=cfg.train_non_residual).trainable_params


def _study(out: Path, storage: str | None, name: str, space: SearchSpace,
           recipe: dict[str, Any], seed: int, pruner: Any | None = None) -> Any:
    """Create or load the study; one sentence when the storage holds another space."""
    optuna = optuna_module()
    url = storage or default_url(out)
    if storage is None:
        from partialft.utils.io import record_open

        record_open(out / "search.db")
    store = open_storage(url)
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=PRUNE_STARTUP)
    pruner = pruner or optuna.pruners.MedianPruner(n_startup_trials=PRUNE_STARTUP,
                                                   n_warmup_steps=PRUNE_WARMUP)
    try:
        study = optuna.create_study(storage=store, study_name=name, direction="maximize",
                                    sampler=sampler, pruner=pruner, load_if_exists=True)
    except Exception as exc:
        raise option_error("storage {url!r} cannot hold study {name!r} ({kind}); give another "
                           "`storage` or `study_name`.", url=url, name=name,
                           kind=type(exc).__name__) from None
    mine = {"space": space.to_dict(), "model": recipe["model"], "dataset": recipe["dataset"]}
    recorded = study.user_attrs.get("partialft")
    if recorded is None:
        study.set_user_attr("partialft", mine)
    elif recorded != mine:
        raise option_error("study {name!r} in storage {url!r} searches another space "
                           "({recorded}); use the same space, another `study_name`, or "
                           "another `storage`.", name=name, url=url, recorded=recorded)
    return study


def _requeue_killed(study: Any, mine: Path | None, n_trials: int) -> None:
    """Fail the trials a kill of this search left RUNNING and, while the search still needs
    trials, queue their choices again (the retry resumes the same run dir). In the dir's own
    storage (``mine`` None) every RUNNING trial is one; in a shared one, those whose run dir lies
    in ``mine``: this process holds that dir's lock, so no live worker runs them (other
    workers' dead trials are left to the heartbeat)."""
    from optuna.trial import TrialState

    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        run_dir = t.user_attrs.get("run_dir")
        if mine is not None and (run_dir is None or Path(run_dir).parent != mine.resolve()):
            continue
        try:
            study.tell(t.number, state=TrialState.FAIL)
        except (RuntimeError, ValueError):  # a heartbeat check failed it meanwhile
            continue
        if _finished(study) < n_trials:
            study.enqueue_trial(t.params, user_attrs={"retry_of": _run_number(t)},
                                skip_if_exists=False)


def _run_number(trial: Any) -> int:
    """The trial whose run dir a retry continues (its own number for a first try): ours
    (``retry_of``) or Optuna's retry callback's (``failed_trial``)."""
    import warnings

    from optuna.storages import RetryFailedTrialCallback
    from optuna.trial import FrozenTrial

    frozen = trial if isinstance(trial, FrozenTrial) else next(
        t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number)
    retry = frozen.user_attrs.get("retry_of")
    if retry is None:
        with warnings.catch_warnings():  # an experimental but public reader of the retry
            warnings.simplefilter("ignore")
            retry = RetryFailedTrialCallback.retried_trial_number(frozen)
    return int(retry) if retry is not None else trial.number


def _finished(study: Any) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,
                                                          TrialState.PRUNED)))


def _optimize(study: Any, cfg: TrainConfig, out: Path, space: SearchSpace, n_trials: int,
              timeout: float | None, progress: bool, classes: int) -> None:
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    left = n_trials - _finished(study)
    if left <= 0:
        return
    stop = MaxTrialsCallback(n_trials, states=(TrialState.COMPLETE, TrialState.PRUNED))
    study.optimize(lambda t: objective(t, cfg, out, space, classes, progress), n_trials=left,
                   timeout=timeout, callbacks=[stop], gc_after_trial=True)


def objective(trial: Any, cfg: TrainConfig, out: Path, space: SearchSpace, classes: int,
              progress: bool = False) -> float:
    """One trial: a FAPFT training run in ``out/trial-NNN``, reporting val acc per epoch."""
    import optuna

    from partialft.training.train import train

    choice = space.suggest(trial)
    run_dir = out / f"trial-{_run_number(trial):03d}"
    tcfg = dataclasses.replace(cfg, mode=choice["mode"], topk=str(choice["topk"]),
                               lr=choice["lr"], out=str(run_dir))
    trial.set_user_attr("choice", choice)
    trial.set_user_attr("run_dir", str(run_dir.resolve()))
    trial.set_user_attr("trainable_params", trainable_params(tcfg, classes))
    start, last = time.perf_counter(), {}

    def on_epoch(record: dict[str, Any]) -> bool:
        last.update(record)
        if record.get("val_acc") is None:
            return True
        trial.report(record["val_acc"], record["epoch"])
        return not trial.should_prune()

    summary = train(tcfg, resume=True, progress=progress, on_epoch=on_epoch)
    trial.set_user_attr("wall_s", round(time.perf_counter() - start, 3))
    if summary is None:
        trial.set_user_attr("pruned_at_epoch", last.get("epoch"))
        print(f"trial {trial.number}: {_describe(choice)} pruned after epoch "
              f"{last.get('epoch')} (val acc {last.get('val_acc')})", flush=True)
        raise optuna.TrialPruned()
    for key in ("test_acc", "best_acc", "wall_s"):
        trial.set_user_attr("run_" + key, summary.get(key))
    print(f"trial {trial.number}: {_describe(choice)} val acc {summary['best_acc']:.2f}%, "
          f"{summary['trainable_params']:,} params, {summary['wall_s']:.1f} s", flush=True)
    if summary["best_acc"] is None:
        raise option_error("search scores trials on the validation split, which is empty "
                           "(val_fraction 0); pass `val_fraction=0.1` or another share.")
    return float(summary["best_acc"])


def _describe(choice: dict[str, Any]) -> str:
    return f"mode {choice['mode']}, top-k {choice['topk']}, lr {choice['lr']:.3g}"
