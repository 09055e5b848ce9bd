"""Uniform and greedy soups: exact averages, frozen tensors, int buffers, bases, the CLI."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from partialft.analysis.soups import Ingredient, greedy_soup, uniform_soup
from partialft.cli import main
from partialft.errors import PartialFTError

BASE_META = {"model": "m", "num_classes": 3, "pretrained": False, "checkpoint": "b"}


@pytest.fixture
def base() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {"w": torch.zeros(2, 2), "b": torch.ones(3), "frozen": torch.randn(5),
            "idx": torch.tensor([0, 1], dtype=torch.long)}


def ing(name: str, delta: dict, acc: float = 50.0, base: dict | None = None) -> Ingredient:
    return Ingredient(name, delta, {"best_acc": acc, "trainable_params": 10 * len(delta)},
                      base or dict(BASE_META))


def test_uniform_soup_averages_exactly_over_all_ingredients(base):
    a = ing("a", {"w": torch.full((2, 2), 3.0), "idx": torch.tensor([5, 6])})
    b = ing("b", {"b": torch.full((3,), 5.0), "idx": torch.tensor([7, 8])})
    full = ing("full", {**base, "w": torch.full((2, 2), 6.0)})  # a full checkpoint
    soup = uniform_soup(base, [a, b, full])
    assert torch.equal(soup.delta["w"], torch.full((2, 2), 3.0))  # (3 + 0 + 6) / 3
    assert torch.equal(soup.delta["b"], torch.full((3,), 7 / 3))  # (1 + 5 + 1) / 3
    assert torch.equal(soup.delta["idx"], torch.tensor([5, 6]))  # first ingredient's, no mean
    assert soup.delta["idx"].dtype == torch.long
    assert "frozen" not in soup.delta  # nobody changed it: stays the base's
    merged = {**base, **soup.delta}
    assert torch.equal(merged["frozen"], base["frozen"])


def test_identical_values_stay_bit_identical(base):
    value = torch.randn(2, 2) * 1e-3 + 0.1
    soup = uniform_soup(base, [ing(str(i), {"w": value.clone()}) for i in range(7)])
    assert torch.equal(soup.delta["w"], value)


def test_greedy_keeps_only_strict_improvements(base):
    """Ranked by each ingredient's own val accuracy measured on its final weights (not the
    summary's best epoch, here in the opposite order), then kept only on a strict gain."""
    a = ing("a", {"w": torch.full((2, 2), 1.0)}, acc=99.0)
    b = ing("b", {"w": torch.full((2, 2), 2.0)}, acc=1.0)
    c = ing("c", {"w": torch.full((2, 2), 4.0)}, acc=50.0)
    # alone: a 70, b 90, c 80 -> order b, c, a; b+c (3.0) better: kept; b+c+a (7/3) equal: not
    val = {1.0: 70.0, 2.0: 90.0, 4.0: 80.0, 3.0: 95.0, round(7 / 3, 4): 95.0}
    seen = []

    def evaluate(state):
        seen.append(round(state["w"][0, 0].item(), 4))
        return val[seen[-1]]

    soup = greedy_soup(base, [a, b, c], evaluate)
    assert seen == [1.0, 2.0, 4.0, 3.0, round(7 / 3, 4)]  # each alone, then the candidates
    assert soup.ranking == {"a": 70.0, "b": 90.0, "c": 80.0}
    assert soup.used == ["b", "c"] and soup.rejected == ["a"]
    assert torch.equal(soup.delta["w"], torch.full((2, 2), 3.0))
    assert soup.val_acc == 95.0
    assert [h["kept"] for h in soup.history] == [True, True, False]


def test_greedy_rejects_a_worse_ingredient_then_keeps_a_better_one(base):
    ings = [ing(n, {"w": torch.full((2, 2), float(v))}, acc=50.0)
            for n, v in zip("xyz", (0, 1, 4))]
    # alone: x 10, y 9, z 8; x+y (0.5) worse: rejected; x+z (2.0) better: kept
    soup = greedy_soup(base, ings, lambda s: {0.0: 10.0, 1.0: 9.0, 4.0: 8.0, 0.5: 5.0,
                                              2.0: 11.0}[round(s["w"][0, 0].item(), 4)])
    assert soup.used == ["x", "z"] and soup.rejected == ["y"]


def test_the_greedy_rule_is_stated_once():
    """Code, --help and docs say the same rule."""
    from partialft.analysis.soups import GREEDY_RULE
    from partialft.cli import build_parser

    root = Path(__file__).resolve().parent.parent
    help_text = " ".join(build_parser()._subparsers._group_actions[0].choices["soup"]
                         .description.split())
    assert GREEDY_RULE in help_text
    doc = " ".join((root / "docs" / "soups-eval-report.md").read_text().split())
    assert GREEDY_RULE in doc


def test_different_bases_are_refused(base):
    other = {**BASE_META, "num_classes": 10}
    with pytest.raises(PartialFTError, match="num_classes"):
        uniform_soup(base, [ing("a", {"w": base["w"] + 1}),
                            ing("b", {"w": base["w"] + 2}, base=other)])


def test_mis_shaped_ingredient_is_refused(base):
    with pytest.raises(PartialFTError, match="shape"):
        uniform_soup(base, [ing("a", {"w": torch.zeros(3, 3)})])


def digest(path: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.iterdir())
            if p.is_file()}


@pytest.fixture
def two_runs(real_runs) -> tuple[Path, Path]:
    """Real attn-only and ffn-only runs from the same base checkpoint."""
    return Path(real_runs["attn"]), Path(real_runs["ffn"])


def test_cli_uniform_soup_writes_a_run_dir(tmp_path, two_runs, capsys):
    from partialft.training.runs import base_state, load_run_model

    r1, r2 = two_runs
    before = digest(r1), digest(r2)
    out = tmp_path / "soup"
    assert main(["soup", str(r1), str(r2), "--out", str(out), "--no-eval"]) == 0
    assert (digest(r1), digest(r2)) == before  # ingredients untouched
    summary = json.loads((out / "summary.json").read_text())
    s1, s2 = (json.loads((r / "summary.json").read_text()) for r in (r1, r2))
    assert summary["method"] == "soup" and summary["soup"] == "uniform"
    assert summary["trainable_params"] == s1["trainable_params"] + s2["trainable_params"]
    assert summary["layers"] == sorted(s1["layers"] + s2["layers"])
    # the soup by hand: each tensor is the mean over the ingredients, a tensor an ingredient
    # did not train counting as the base's
    base = base_state(r1)
    d1, d2 = (load_file(str(r / "delta.safetensors")) for r in (r1, r2))
    state = load_run_model(out)[0].state_dict()
    for key, value in base.items():
        expected = (d1.get(key, value) + d2.get(key, value)) / 2
        if key in d1 or key in d2:
            assert torch.allclose(state[key], expected, atol=1e-6), key
        else:
            assert torch.equal(state[key], value), key  # frozen: bit-identical to the base
    assert main(["soup", str(r1), str(r2), "--out", str(out), "--no-eval"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["soup", str(r1), str(r2), "--out", str(out), "--no-eval", "--overwrite"]) == 0


def test_cli_greedy_soup_with_scripted_evaluator(tmp_path, two_runs, monkeypatch):
    import partialft.cli.soup as soup_cmd

    r1, r2 = two_runs
    first, second = r2, r1  # ranked by the scripted val accuracies alone: r1 70, r2 80
    scores = {"val": iter([70.0, 80.0, 79.0]), "test": iter([77.0])}
    monkeypatch.setattr(soup_cmd, "make_evaluator",
                        lambda run, split, *a, **k: lambda state: next(scores[split]))
    out = tmp_path / "greedy"
    assert main(["soup", str(r1), str(r2), "--greedy", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["used"] == [str(first)] and summary["rejected"] == [str(second)]
    assert summary["best_acc"] == 80.0 and summary["test_acc"] == 77.0
    assert summary["trainable_params"] == json.loads(
        (first / "summary.json").read_text())["trainable_params"]


def test_cli_refuses_different_bases(tmp_path, two_runs, capsys):
    from conftest import REAL

    r1, _ = two_runs
    other = tmp_path / "other"  # no checkpoint: its weights are drawn from --seed 5
    assert main(["train", *REAL, "--method", "attn", "--seed", "5", "--out", str(other)]) == 0
    capsys.readouterr()
    assert main(["soup", str(r1), str(other), "--out", str(tmp_path / "x"), "--no-eval"]) == 2
    err = capsys.readouterr().err
    assert "same base" in err and not (tmp_path / "x").exists()


@pytest.mark.slow
def test_cli_greedy_soup_evaluates_on_the_val_split(tmp_path, real_runs):
    runs = [real_runs[f"full-a-s{s}"] for s in range(3)]
    out = tmp_path / "real"
    assert main(["soup", *runs, "--greedy", "--out", str(out), "--device", "cpu",
                 "--batch-size", "32"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    history = summary["greedy_history"]
    ranking = summary["ingredient_val_acc"]  # each run's final weights on the val split
    assert sorted(ranking) == sorted(runs)
    by_val = sorted(runs, key=lambda r: -ranking[r])
    assert [h["ingredient"] for h in history] == by_val  # by held-out accuracy, best first
    assert history[0]["val_acc"] == ranking[by_val[0]]
    assert summary["best_acc"] == max(h["val_acc"] for h in history if h["kept"])
    assert 0.0 <= summary["test_acc"] <= 100.0
