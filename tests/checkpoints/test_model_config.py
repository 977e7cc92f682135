import glob
import importlib.util
import os

import numpy as np
import pytest
import soundfile as sf
from safetensors.torch import save_file

import flowtts
from conftest import randomise, write_file
from flowtts.checkpoints.export import export_upstream
from flowtts.checkpoints.model_config import read_model_config
from flowtts.cli import main
from flowtts.config import PRESETS, ModelConfig
from flowtts.model.build import build_model
from flowtts.text import save_vocab
from upstream import needs_upstream

spec = importlib.util.find_spec("f5_tts")
UPSTREAM_ROOT = list(spec.submodule_search_locations)[0] if spec else None
UPSTREAM_CONFIGS = sorted(glob.glob(os.path.join(UPSTREAM_ROOT, "configs", "*.yaml"))) if spec else []
VOCAB = {c: i for i, c in enumerate(" abcdefghijklmnopqrstuvwxyz,.")}
CUSTOM = """\
hydra:
  run:
    dir: ckpts/${model.name}_${model.mel_spec.mel_spec_type}   # interpolations elsewhere are fine
model:
  name: MyTTS
  tokenizer: custom
  backbone: DiT
  arch:
    dim: 64
    depth: 3
    heads: 4
    text_dim: 32
    conv_layers: 1
    attn_backend: torch  # run-time settings, not architecture
    checkpoint_activations: False
  mel_spec:
    target_sample_rate: 24000
    n_mel_channels: 100
    hop_length: 256
    win_length: 1024
    n_fft: 1024
    mel_spec_type: vocos
"""


@needs_upstream(bool(UPSTREAM_CONFIGS))
def test_upstreams_config_files_are_flowtts_presets():
    names = [os.path.basename(path)[:-5] for path in UPSTREAM_CONFIGS]
    assert {"F5TTS_v1_Base", "F5TTS_Base", "E2TTS_Base"} <= set(names)
    for name, path in zip(names, UPSTREAM_CONFIGS):
        assert read_model_config(path) == PRESETS[name], name


def test_a_custom_yaml_reads_with_upstreams_constructor_defaults(tmp_path):
    config = read_model_config(write_file(tmp_path, "my.yaml", CUSTOM))
    assert config == ModelConfig(dim=64, depth=3, heads=4, text_dim=32, conv_layers=1, ff_mult=4)
    assert config.text_mask_padding and config.pe_attn_head is None  # DiT's defaults, not a preset's


def test_exported_config_reads_back(tmp_path):
    model = build_model("tiny", VOCAB)
    paths = export_upstream(model, str(tmp_path))
    assert read_model_config(paths["config"]).with_vocab_size(len(VOCAB)) == model.config


@pytest.mark.parametrize(
    "edit, match",
    [
        (("backbone: DiT", "backbone: MMDiT"), "backbone 'MMDiT' is not implemented"),
        (("conv_layers: 1", "skip_connect_type: add"), "skip_connect_type are not arguments of DiT"),
        (("conv_layers: 1", "wibble: 2"), "wibble are not arguments of DiT"),
        (("    dim: 64\n", ""), "model.arch has no dim"),
        (("mel_spec_type: vocos", "mel_spec_type: vocos\n    f_max: 8000"), "model.mel_spec keys must be among"),
        (("model:", "other:"), "no model.arch section"),
        (("depth: 3", "depth: [3"), "not a YAML file"),
    ],
)
def test_bad_config_files_are_explained(tmp_path, edit, match):
    path = write_file(tmp_path, "bad.yaml", CUSTOM.replace(*edit))
    with pytest.raises(ValueError, match=match):
        read_model_config(path)


def test_infer_with_model_cfg_loads_an_architecture_no_preset_has(tmp_path, capsys):
    config = read_model_config(write_file(tmp_path, "my.yaml", CUSTOM))
    model = randomise(build_model(config, VOCAB), std=0.05)
    flowtts.save(model, tmp_path / "ours.safetensors")
    bare = str(tmp_path / "model_100.safetensors")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, bare)
    save_vocab(VOCAB, tmp_path / "vocab.txt")
    common = ["-t", "a short test.", "--nfe_step", "3", "--seed", "1", "-q"]
    common += ["--pipeline", "flowtts"]  # the F5-TTS checkpoint would default to F5-TTS's pipeline
    assert main(["infer", "--model", str(tmp_path / "ours.safetensors"), *common, "-o", str(tmp_path / "a.wav")]) == 0
    upstream = ["infer", "--model_cfg", str(tmp_path / "my.yaml"), "-p", bare, "-v", str(tmp_path / "vocab.txt")]
    assert main([*upstream, *common, "-o", str(tmp_path / "b.wav")]) == 0
    a, b = sf.read(tmp_path / "a.wav")[0], sf.read(tmp_path / "b.wav")[0]
    assert a.shape == b.shape and np.abs(a - b).max() < 1e-4
    toml = f'model_cfg = "{tmp_path / "my.yaml"}"\nckpt_file = "{bare}"\nvocab_file = "{tmp_path / "vocab.txt"}"\n'
    assert main(["infer", "-c", write_file(tmp_path, "c.toml", toml), *common, "-o", str(tmp_path / "c.wav")]) == 0
    assert np.abs(sf.read(tmp_path / "c.wav")[0] - a).max() < 1e-4
    capsys.readouterr()
    assert main(["infer", "-p", bare, "-v", str(tmp_path / "vocab.txt"), *common, "-o", str(tmp_path / "d.wav")]) == 2
    assert "matches no preset" in capsys.readouterr().err
