"""Property-based: random CLI flags and random YAML configs never end in an uncaught exception.

Every example runs the real ``partialft.cli.main`` (one optimizer step on tiny data at most) and
must exit 0, or 2 with exactly one line on stderr and no traceback.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings, strategies as st

from partialft.training.config import FIELDS

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("bad_inputs", ROOT / "benchmarks" / "bad_inputs.py")
bad_inputs = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("bad_inputs", bad_inputs)
_spec.loader.exec_module(bad_inputs)

# the tiny run every example starts from; --max-steps 1 keeps valid examples short
BASE = [*bad_inputs.TINY, "--max-steps", "1", "--no-compile"]
# PARTIALFT_PROPERTY_EXAMPLES=500 explores further (random, not the fixed derandomized set)
_MANY = int(os.environ.get("PARTIALFT_PROPERTY_EXAMPLES", "0"))
SETTINGS = settings(max_examples=_MANY or 25, deadline=None, derandomize=not _MANY,
                    suppress_health_check=[HealthCheck.too_slow], database=None)

numbers = st.one_of(st.integers(-10, 10**7), st.floats(allow_nan=True, allow_infinity=True))
# no control or line-break characters: they are printed escaped, which the checks below do not model
junk = st.text(st.characters(codec="utf-8", exclude_categories=("Cc", "Cs", "Zl", "Zp")),
               max_size=8)
flag_value = st.one_of(numbers.map(str), junk, st.sampled_from(
    ["0", "-1", "1e-3", "nan", "inf", "2,2", "0,0,6,2", "large", "small", "none", ""]))
FLAGS = ["--lr", "--epochs", "--topk", "--batch-size", "--mode", "--method", "--warmup-epochs",
         "--val-fraction", "--img-size", "--grad-accum", "--hflip", "--crop-scale", "--mixup",
         "--label-smoothing", "--ema", "--grad-clip", "--randaugment", "--layers", "--amp",
         "--num-classes", "--checkpoint-every", "--random-erasing", "--weight-decay"]
yaml_value = st.one_of(st.none(), st.booleans(), numbers, junk,
                       st.lists(junk, max_size=3), st.dictionaries(junk, numbers, max_size=2))
# random YAML keys: real fields (but not the ones BASE pins or that need a network/compiler)
PINNED = {"model", "dataset", "img_size", "max_per_split", "batch_size", "epochs", "amp",
          "pretrained", "max_steps", "compile", "out"}
yaml_key = st.one_of(st.sampled_from(sorted(set(FIELDS) - PINNED)), junk)


def check(argv: list[str]) -> None:
    """Exit 0, or 2 with one line and no traceback; a stray exception fails the property."""
    got = bad_inputs.run_cli(argv)
    assert got.traceback is None, got.traceback
    assert got.code in (0, 2), (got.code, got.stderr)
    assert "Traceback" not in got.stderr
    if got.code == 2:
        assert len(got.lines) == 1, got.stderr


def in_tmp(run: callable) -> None:
    d = Path(tempfile.mkdtemp(prefix="pft-prop-"))
    try:
        run(d)
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.mark.slow
@SETTINGS
@given(st.dictionaries(st.sampled_from(FLAGS), flag_value, min_size=1, max_size=4))
def test_random_train_flags_exit_0_or_2_with_one_line(flags):
    extra = [part for flag, value in flags.items() for part in (flag, value)]
    in_tmp(lambda d: check(["train", *BASE, "--out", str(d / "run"), *extra]))


@pytest.mark.slow
@SETTINGS
@given(st.dictionaries(yaml_key, yaml_value, max_size=5))
def test_random_yaml_configs_exit_0_or_2_with_one_line(config):
    def run(d: Path) -> None:
        (d / "c.yaml").write_text(yaml.safe_dump(config))
        check(["train", "--config", str(d / "c.yaml"), *BASE, "--out", str(d / "run")])

    in_tmp(run)


@SETTINGS
@given(st.dictionaries(st.sampled_from(["--method", "--topk", "--mode", "--layers",
                                        "--num-classes"]), flag_value, min_size=1, max_size=3))
def test_random_plan_flags_exit_0_or_2_with_one_line(flags):
    argv = ["plan", "--model", "test_vit"]
    flags.setdefault("--method", "full")
    for flag, value in flags.items():
        argv += [flag, value] if flag != "--mode" or value in ("large", "small") else []
    check(argv)


def test_a_value_with_a_line_break_still_gives_one_line(tmp_path):
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"angles": "a\rb"}))
    check(["train", "--config", str(tmp_path / "c.yaml"), *BASE, "--out", str(tmp_path / "r")])
