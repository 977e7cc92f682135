import json

import pytest
import torch

import flowtts
from conftest import randomise
from flowtts.checkpoints.export import export_upstream
from flowtts.cli import main
from flowtts.config import ModelConfig
from flowtts.model.build import build_model
from upstream import load_upstream, load_upstream_unett, needs_upstream

VOCAB = {c: i for i, c in enumerate(" abcdefghijklmnopqrstuvwxyz,.")}


E2_TINY = ModelConfig(
    backbone="UNetT",
    dim=64,
    depth=4,
    heads=4,
    ff_mult=2,
    text_dim=None,
    conv_layers=0,
    text_mask_padding=False,
    pe_attn_head=1,
)


def _model(config="tiny"):
    return randomise(build_model(config, VOCAB), std=0.05).eval()


def _upstream_vocab(path):
    # F5-TTS's "custom" tokenizer: token = each line without its newline, id = line number.
    with open(path, encoding="utf-8") as f:
        return {line[:-1]: i for i, line in enumerate(f)}


def test_export_writes_weights_vocab_and_an_upstream_model_config(tmp_path):
    model = _model()
    paths = export_upstream(model, str(tmp_path / "out"), name="mine")
    assert paths["notes"] == []
    assert _upstream_vocab(paths["vocab"]) == VOCAB
    config = json.loads(open(paths["config"], encoding="utf-8").read())["model"]
    assert config["name"] == "mine" and config["backbone"] == "DiT" and config["tokenizer"] == "custom"
    expected = {k: v for k, v in model.config.backbone_kwargs().items() if k not in ("mel_dim", "text_num_embeds")}
    arch = config["arch"]
    assert {k: arch[k] for k in expected} == expected
    assert config["mel_spec"] == {**model.config.mel.__dict__}
    back = flowtts.load(paths["weights"])  # still a self-describing flowtts file
    for key, value in model.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key


@needs_upstream(load_upstream() is not None and load_upstream_unett() is not None)
@pytest.mark.parametrize("backbone", ["DiT", "UNetT"])
def test_upstream_builds_loads_and_samples_the_export_as_flowtts_does(tmp_path, backbone):
    UCFM, UDiT = load_upstream()
    backbones = {"DiT": UDiT, "UNetT": load_upstream_unett()}
    from safetensors.torch import load_file

    model = _model("tiny" if backbone == "DiT" else E2_TINY)
    paths = export_upstream(model, str(tmp_path))
    # What F5-TTS's load_model/load_checkpoint do with the three files.
    config = json.loads(open(paths["config"], encoding="utf-8").read())["model"]
    vocab = _upstream_vocab(paths["vocab"])
    mel = config["mel_spec"]
    assert config["backbone"] == backbone
    theirs = UCFM(
        transformer=backbones[config["backbone"]](
            **config["arch"], text_num_embeds=len(vocab), mel_dim=mel["n_mel_channels"]
        ),
        mel_spec_kwargs=mel,
        odeint_kwargs=dict(method="euler"),
        vocab_char_map=vocab,
    )
    state = {k.replace("ema_model.", ""): v for k, v in load_file(paths["weights"]).items()}
    theirs.load_state_dict({k: v for k, v in state.items() if k not in ("initted", "step")}, strict=True)
    theirs.eval()
    cond = torch.randn(1, 25, 100, generator=torch.Generator().manual_seed(1))
    kwargs = dict(steps=6, cfg_strength=2.0, sway_sampling_coef=-1.0, seed=4)
    ref, _ = theirs.sample(cond, ["a short text, for both."], 70, **kwargs)
    out, _ = model.sample(cond, ["a short text, for both."], 70, **kwargs)
    assert torch.allclose(out, ref, atol=1e-5, rtol=0)
    assert (out[:, 25:] - cond.mean()).abs().mean() > 0.05


def test_export_refuses_byte_models_and_existing_files(tmp_path):
    with pytest.raises(ValueError, match="no vocabulary"):
        export_upstream(build_model("tiny"), str(tmp_path / "b"))
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "vocab.txt").write_text("keep\n")
    with pytest.raises(FileExistsError, match="vocab.txt"):
        export_upstream(_model(), str(tmp_path / "c"))
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["vocab.txt"]
    assert (tmp_path / "c" / "vocab.txt").read_text() == "keep\n"
    with pytest.raises(ValueError, match="plain file stem"):
        export_upstream(_model(), str(tmp_path / "d"), name="../x")


def test_export_command_notes_a_students_sampling_and_needs_force_to_replace(tmp_path, capsys):
    out = str(tmp_path / "e")
    assert main(["export", "builtin:student", "-o", out, "--dtype", "bfloat16"]) == 0
    captured = capsys.readouterr()
    assert "f5-tts_infer-cli --model_cfg" in captured.out and "a distilled student" in captured.err
    from safetensors.torch import load_file

    assert {v.dtype for v in load_file(f"{out}/model.safetensors").values() if v.is_floating_point()} == {
        torch.bfloat16
    }
    assert main(["export", "builtin:student", "-o", out]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["export", "builtin:student", "-o", out, "--force"]) == 0
