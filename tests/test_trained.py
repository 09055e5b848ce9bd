"""The PEFT-shaped face: one option vocabulary, get_partial_model, print_trainable_parameters,
save_trained / load_trained (the run dir's delta format) and errors worded for the caller."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from conftest import IMG, REAL, assert_user_error, cli, tiny

import partialft
from partialft.methods import method_options
from partialft.models import create_model
from partialft.training.checkpoints import DELTA, read_metadata
from partialft.training.config import FIELDS

# (method, options) made small for test_vit (6 blocks, width 64)
CASES = [("lora", {"rank": 2, "alpha": 4.0, "targets": "qkv,mlp.fc1"}),
         ("vpt-deep", {"tokens": 3}), ("adapter", {"reduction": 8}), ("ssf", {}),
         ("attn", {}), ("last-half-blocks", {}), ("layers", {"layers": ["blocks.2.mlp"]}),
         ("linear", {}), ("full", {})]


def _train_steps(model: torch.nn.Module, steps: int = 3) -> None:
    """A few SGD steps on random data: the trained tensors move away from their start."""
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    gen = torch.Generator().manual_seed(1)
    model.train()
    for _ in range(steps):
        x = torch.randn(4, 3, IMG, IMG, generator=gen)
        loss = model(x).logsumexp(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def _outputs(model: torch.nn.Module) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(torch.randn(3, 3, IMG, IMG, generator=torch.Generator().manual_seed(2)))


def test_prepare_applies_keyword_options_and_refuses_unknown_ones():
    """The issue's case: rank=4 on partialft_vit_tiny with 10 classes trains 99,594, not rank
    8's 197,898; a misspelt option names itself, the valid ones and a close name."""
    def fresh() -> torch.nn.Module:
        return create_model("partialft_vit_tiny", num_classes=10, pretrained=False)

    assert partialft.prepare(fresh(), "lora", rank=4).summary.trainable_params == 99_594
    assert partialft.prepare(fresh(), "lora").summary.trainable_params == 197_898
    with pytest.raises(partialft.PartialFTError) as info:
        partialft.prepare(fresh(), "lora", rnak=4)
    assert str(info.value) == ("method 'lora' does not take the option rnak (did you mean "
                               "rank?); its options: rank, alpha, dropout, targets.")
    with pytest.raises(partialft.PartialFTError, match="'attn' does not take the option topk"):
        partialft.prepare(fresh(), "attn", topk=2)
    with pytest.raises(partialft.PartialFTError, match="prompts of vpt-deep is now called tokens"):
        partialft.prepare(fresh(), "vpt-deep", prompts=4)


def test_every_option_has_one_name_in_library_config_and_cli(capsys):
    """Each option of each method is a TrainConfig key and a flag of train and plan, and
    'partialft methods' lists it under its method."""
    code, listing, _ = cli(capsys, "methods")
    assert code == 0
    _, train_help, _ = cli(capsys, "train", "--help")
    _, plan_help, _ = cli(capsys, "plan", "--help")
    for method in partialft.all_methods():
        assert re.search(rf"^{re.escape(method)}\b", listing, re.M), method
        for option in method_options(method):
            assert option in FIELDS, (method, option)
            flag = "--" + option.replace("_", "-")
            assert flag in train_help and flag in plan_help, (method, flag)
            assert flag in listing
    code, out, _ = cli(capsys, "methods", "vpt-deep")
    assert code == 0 and "--tokens" in out and "--rank" not in out


def test_cli_refuses_an_option_the_method_does_not_take(capsys, tmp_path):
    code, _, err = cli(capsys, "plan", "--model", "test_vit", "--method", "attn", "--rank", "4")
    assert_user_error(code, err, "does not take the option --rank", "its options: none")
    code, _, err = cli(capsys, "train", *REAL, "--out", tmp_path / "r", "--method", "ssf",
                       "--tokens", "4")
    assert_user_error(code, err, "'ssf' does not take the option --tokens")
    assert not (tmp_path / "r").exists()
    code, _, err = cli(capsys, "plan", "--model", "test_vit", "--method", "vpt-deep",
                       "--vpt-tokens", "4")
    assert_user_error(code, err, "--vpt-tokens is now called --tokens")
    code, out, _ = cli(capsys, "plan", "--model", "test_vit", "--method", "vpt-deep",
                       "--tokens", "4", "--json")
    assert code == 0 and '"tokens": 4' in out


def test_a_config_takes_the_same_option_names(capsys, tmp_path):
    config = tmp_path / "lora.yaml"
    config.write_text("model: test_vit\nmethod: lora\ndataset: synthetic:4\nrank: 2\n"
                      "targets: [qkv]\n")
    code, out, err = cli(capsys, "plan", "--config", config, "--json")
    assert code == 0, err
    plan = json.loads(out)
    assert (plan["rank"], plan["targets"]) == (2, "qkv")
    assert plan["trainable_params"] == 6 * 2 * (64 + 192) + 64 * 4 + 4


def test_a_config_with_old_keys_names_the_new_ones(capsys, tmp_path):
    for text, needle in (("lora_rank: 4\n", "lora_rank is now called rank"),
                         ("baseline: {rank: 4}\n", "top-level keys")):
        config = tmp_path / "c.yaml"
        config.write_text("method: lora\n" + text)
        code, _, err = cli(capsys, "train", "--config", config, "--out", tmp_path / "r")
        assert_user_error(code, err, needle)


def test_get_partial_model_returns_the_module_and_prints_peft_line(capsys):
    model = tiny("vit")
    same = partialft.get_partial_model(model, "lora", rank=2)
    assert same is model and isinstance(same, torch.nn.Module)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    assert trainable == 6 * 2 * (64 + 192 + 64 + 64 + 64 + 192 + 192 + 64) + 64 * 5 + 5
    partialft.print_trainable_parameters(model)
    line = capsys.readouterr().out.strip()
    assert line == (f"trainable params: {trainable:,} || all params: {total:,} || "
                    f"trainable%: {100 * trainable / total:.4f}")
    assert model.partialft_config["method"] == "lora"
    with pytest.raises(partialft.PartialFTError, match="already partial"):
        partialft.get_partial_model(model, "attn")


@pytest.mark.parametrize("method, options", CASES, ids=[c[0] for c in CASES])
def test_save_and_load_trained_round_trip_bit_for_bit(tmp_path, method, options):
    model = partialft.get_partial_model(tiny("vit"), method, **options)
    _train_steps(model)
    path = partialft.save_trained(model, tmp_path / "saved")
    assert path == tmp_path / "saved" / DELTA
    with torch.no_grad():
        saved = dict(partialft.models.load_state_dict_file(path))
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trained <= set(saved) and len(saved) < len(model.state_dict()) or method == "full"
    meta = read_metadata(path)
    assert meta["selection"]["method"] == method
    assert meta["base"]["model"] == "test_vit" and len(meta["base"]["weights_sha256"]) == 64
    loaded = partialft.load_trained(tiny("vit"), tmp_path / "saved")
    assert torch.equal(_outputs(loaded), _outputs(model))
    assert {n for n, p in loaded.named_parameters() if p.requires_grad} == trained
    # the loaded model saves again, the same tensors
    again = partialft.save_trained(loaded, tmp_path / "again")
    assert set(partialft.models.load_state_dict_file(again)) == set(saved)


def test_fapft_selection_reloads_without_its_angles(tmp_path):
    layer_map = partialft.find_layers(tiny("vit"))
    angles = {la.id: float((7 * i) % 11) for i, la in enumerate(layer_map.layers)}
    model = partialft.get_partial_model(tiny("vit"), "fapft", angles=angles, topk=2, mode="large")
    _train_steps(model)
    partialft.save_trained(model, tmp_path)
    loaded = partialft.load_trained(tiny("vit"), tmp_path)
    assert torch.equal(_outputs(loaded), _outputs(model))
    assert loaded.partialft_config["selection"]["topk"] == [2]


def test_load_trained_refuses_other_base_weights_unless_asked(tmp_path, capsys):
    model = partialft.get_partial_model(tiny("vit"), "attn")
    _train_steps(model)
    partialft.save_trained(model, tmp_path)
    with pytest.raises(partialft.PartialFTError) as info:
        partialft.load_trained(tiny("vit", seed=5), tmp_path)
    assert "allow_base_mismatch=True" in str(info.value) and "--allow" not in str(info.value)
    loaded = partialft.load_trained(tiny("vit", seed=5), tmp_path, allow_base_mismatch=True)
    assert "warning" in capsys.readouterr().err
    assert not torch.equal(_outputs(loaded), _outputs(model))  # other frozen weights


def test_save_trained_keeps_what_it_did_not_write(tmp_path):
    model = partialft.get_partial_model(tiny("vit"), "linear")
    partialft.save_trained(model, tmp_path)
    with pytest.raises(partialft.PartialFTError, match="pass overwrite=True"):
        partialft.save_trained(model, tmp_path)
    partialft.save_trained(model, tmp_path, overwrite=True)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / DELTA).write_bytes(b"a user's file")
    with pytest.raises(partialft.PartialFTError, match="not a delta partialft wrote"):
        partialft.save_trained(model, tmp_path / "other", overwrite=True)
    assert (tmp_path / "other" / DELTA).read_bytes() == b"a user's file"
    with pytest.raises(partialft.PartialFTError, match="get_partial_model"):
        partialft.save_trained(tiny("vit"), tmp_path / "plain")


@pytest.mark.parametrize("method, extra", [("lora", ["--rank", "2", "--targets", "qkv"]),
                                           ("first-half-attn", ["--train-non-residual"])])
def test_load_trained_reads_a_run_dir_of_partialft_train(tmp_path, capsys, method, extra):
    """A real `partialft train` run dir is what save_trained writes: load_trained rebuilds it
    (from the recorded base, or from a base the caller built) and equals the run's model."""
    from partialft.training.runs import base_model, delta_info, load_run_model

    run = tmp_path / "run"
    code, _, err = cli(capsys, "train", *REAL, "--epochs", "1", "--out", run, "--method",
                       method, *extra)
    assert code == 0, err
    reference, _ = load_run_model(run)
    loaded = partialft.load_trained(None, run)
    assert torch.equal(_outputs(loaded), _outputs(reference))
    base = base_model(delta_info(run)["base"])
    assert torch.equal(_outputs(partialft.load_trained(base, run)), _outputs(reference))
    trainable = {n for n, p in loaded.named_parameters() if p.requires_grad}
    summary = partialft.training.checkpoints.read_summary(run)
    assert sum(loaded.get_parameter(n).numel() for n in trainable) == summary["trainable_params"]
    partialft.save_trained(loaded, tmp_path / "copy")
    assert torch.equal(_outputs(partialft.load_trained(None, tmp_path / "copy")),
                       _outputs(reference))


def test_library_and_cli_word_the_same_mistake_for_their_caller(capsys):
    """Keyword arguments in the library's sentence, flags in the CLI's."""
    with pytest.raises(partialft.PartialFTError) as info:
        partialft.prepare(tiny("vit"), "layers")
    assert "layers=['blocks.3.attn', 'blocks.5.mlp']" in str(info.value)
    assert "--layers" not in str(info.value)
    code, _, err = cli(capsys, "plan", "--model", "test_vit", "--method", "layers")
    assert_user_error(code, err, "--layers blocks.3.attn,blocks.5.mlp")
    with pytest.raises(partialft.PartialFTError) as info:
        partialft.prepare(tiny("vit"), "fapft", mode="large")
    assert "angles=" in str(info.value) and "--angles" not in str(info.value)
    with pytest.raises(partialft.PartialFTError) as info:
        partialft.prepare(tiny("vit"), "lora", rank=0)
    assert "rank=0" in str(info.value)
    code, _, err = cli(capsys, "plan", "--model", "test_vit", "--method", "lora", "--rank", "0")
    assert_user_error(code, err, "--rank 0 is invalid")


def test_trainer_callback_checkpoints_hold_only_trained_tensors(tmp_path):
    transformers = pytest.importorskip("transformers")
    from partialft.integrations import SaveTrainedCallback

    class Images(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 8

        def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
            gen = torch.Generator().manual_seed(i)
            return {"pixel_values": torch.randn(3, IMG, IMG, generator=gen),
                    "labels": torch.tensor(i % 5)}

    class WithLoss(torch.nn.Module):
        def __init__(self, model: torch.nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, pixel_values, labels=None):
            logits = self.model(pixel_values)
            return {"loss": torch.nn.functional.cross_entropy(logits, labels), "logits": logits}

    model = partialft.get_partial_model(tiny("vit"), "lora", rank=2)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"), max_steps=4, save_steps=2, per_device_train_batch_size=4,
        report_to=[], use_cpu=True, logging_strategy="no", learning_rate=1e-2)
    trainer = transformers.Trainer(model=WithLoss(model), args=args, train_dataset=Images(),
                                   callbacks=[SaveTrainedCallback()])
    trainer.train()
    for step in (2, 4):
        folder = Path(args.output_dir) / f"checkpoint-{step}"
        assert (folder / DELTA).is_file()
        assert not (folder / "model.safetensors").exists()
        assert not (folder / "pytorch_model.bin").exists()
    delta = partialft.models.load_state_dict_file(Path(args.output_dir) / "checkpoint-4" / DELTA)
    assert all("lora_" in k or k.startswith("head.") for k in delta)
    loaded = partialft.load_trained(tiny("vit"), Path(args.output_dir) / "checkpoint-4")
    assert torch.equal(_outputs(loaded), _outputs(model))


def test_a_config_carrying_fapft_settings_still_trains_other_methods(tmp_path):
    """The paper configs set fapft's topk and mode for every method: a config may hold them
    (only a flag given for the wrong method is a mistake), and the method gets only its own."""
    from conftest import tiny_run

    from partialft.training.train import train

    summary = train(tiny_run(tmp_path / "attn", method="attn", topk="1", mode="large",
                             epochs=1), progress=False)
    assert summary["method"] == "attn" and len(summary["layers"]) == 6
