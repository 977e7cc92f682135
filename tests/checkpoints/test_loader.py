import copy

import pytest
import torch

import flowtts
from conftest import randomise
from flowtts.checkpoints.official import CheckpointError, match_preset
from flowtts.config import PRESETS
from flowtts.model.build import build_model

VOCAB = {c: i for i, c in enumerate(" abcdefghijklmnopqrstuvwxyz,.'")}


@pytest.fixture(scope="module")
def source():
    model = randomise(build_model("tiny", VOCAB), std=0.02).eval()
    return model


def _out(model):
    cond = torch.randn(1, 20, 100, generator=torch.Generator().manual_seed(0))
    return model.sample(cond, ["hello there, world."], 60, steps=3, cfg_strength=2.0, seed=1)[0]


def _upstream_pt(model, path, with_plain=True):
    ema = {f"ema_model.{k}": v.clone() for k, v in model.state_dict().items()}
    ema["initted"] = torch.tensor(True)
    ema["step"] = torch.tensor(1234)
    ema["ema_model.mel_spec.mel_stft.mel_scale.fb"] = torch.zeros(513, 100)
    payload = {"ema_model_state_dict": ema, "step": 99}
    if with_plain:
        payload["model_state_dict"] = {k: v * 0 + 0.5 for k, v in model.state_dict().items()}
    torch.save(payload, path)


def _vocab_file(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("".join(c + "\n" for c in VOCAB), encoding="utf-8")
    return path


def test_official_pt_loads_ema_and_matches_source(source, tmp_path):
    _upstream_pt(source, tmp_path / "model_1000.pt")
    loaded = flowtts.load(tmp_path / "model_1000.pt", preset="tiny", vocab=_vocab_file(tmp_path))
    assert torch.equal(_out(loaded), _out(source))
    plain = flowtts.load(tmp_path / "model_1000.pt", preset="tiny", vocab=VOCAB, use_ema=False)
    assert torch.all(plain.transformer.proj_out.weight == 0.5)


def test_official_safetensors_bare_ema_dict_and_preset_matching(source, tmp_path):
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    save_file(state, str(tmp_path / "model.safetensors"))
    loaded = flowtts.load(tmp_path / "model.safetensors", vocab=VOCAB)  # preset found by shapes
    assert loaded.preset == "tiny"
    assert torch.equal(_out(loaded), _out(source))
    half = flowtts.load(tmp_path / "model.safetensors", vocab=VOCAB, dtype="bfloat16")
    assert half.dtype == torch.bfloat16


def test_v1_preferred_when_v0_has_the_same_shapes():
    with torch.device("meta"):
        small = build_model(PRESETS["F5TTS_Small"].with_vocab_size(40))
    assert match_preset(small.state_dict()) == "F5TTS_v1_Small"


def test_mismatched_checkpoint_lists_problems_and_names_the_preset(source, tmp_path):
    state = dict(source.state_dict())
    state.pop("transformer.proj_out.bias")
    state["transformer.extra.weight"] = torch.zeros(3)
    state["transformer.norm_out.linear.weight"] = torch.zeros(7, 7)
    torch.save({"ema_model_state_dict": {f"ema_model.{k}": v for k, v in state.items()}}, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError) as info:
        flowtts.load(tmp_path / "bad.pt", preset="tiny", vocab=VOCAB)
    message = str(info.value)
    assert "preset tiny" in message
    assert "transformer.proj_out.bias" in message and "transformer.extra.weight" in message
    assert "transformer.norm_out.linear.weight: checkpoint (7, 7)" in message
    with pytest.raises(CheckpointError, match="matches no preset"):
        flowtts.load(tmp_path / "bad.pt", vocab=VOCAB)


def test_unreadable_files_and_wrong_arguments(source, tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable"):
        flowtts.load(tmp_path / "junk.pt", preset="tiny", vocab=VOCAB)
    (tmp_path / "junk.safetensors").write_bytes(b"\x00\x01")
    with pytest.raises(CheckpointError, match="safetensors"):
        flowtts.load(tmp_path / "junk.safetensors", preset="tiny", vocab=VOCAB)
    with pytest.raises(FileNotFoundError):
        flowtts.load(tmp_path / "missing.pt")
    _upstream_pt(source, tmp_path / "ok.pt", with_plain=False)
    with pytest.raises(ValueError, match="unknown preset"):
        flowtts.load(tmp_path / "ok.pt", preset="F5TTS_Huge", vocab=VOCAB)
    with pytest.raises(ValueError, match="vocab.txt"):
        flowtts.load(tmp_path / "ok.pt", preset="tiny")
    with pytest.raises(CheckpointError, match="wrong vocab.txt"):
        flowtts.load(tmp_path / "ok.pt", preset="tiny", vocab={"a": 0})
    with pytest.raises(CheckpointError, match="use_ema=True"):
        flowtts.load(tmp_path / "ok.pt", preset="tiny", vocab=VOCAB, use_ema=False)


def test_pickled_objects_are_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("executed",))

    torch.save({"ema_model_state_dict": {"x": Evil()}}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="holds Python objects besides tensors") as error:
        flowtts.load(tmp_path / "evil.pt", preset="tiny", vocab=VOCAB)
    assert "weights_only=False" not in str(error.value)  # torch's advice would run the file's code


def test_flowtts_files_whose_tensors_or_vocabulary_do_not_fit_are_named(source, tmp_path):
    from safetensors.torch import load_file, save_file

    from flowtts.checkpoints.loader import read_metadata

    path = tmp_path / "mine.safetensors"
    flowtts.save(source, path)
    tensors, metadata = load_file(str(path)), read_metadata(str(path))
    name = "transformer.proj_out.weight"
    tensors[name] = torch.zeros(tensors[name].shape[0], tensors[name].shape[1] + 1)
    save_file(tensors, str(tmp_path / "bad.safetensors"), metadata=metadata)
    with pytest.raises(CheckpointError, match=f"does not fit the architecture it records: .*{name}"):
        flowtts.load(tmp_path / "bad.safetensors")
    other_vocab = {c: i for i, c in enumerate(" abc")}
    with pytest.raises(CheckpointError, match="the vocabulary has 4 units but .* embeds 30 text tokens"):
        flowtts.load(path, vocab=other_vocab)


def test_a_vocabulary_of_another_size_for_the_builtin_student_is_one_line(tmp_path, capsys):
    from flowtts.cli import main

    vocab = tmp_path / "v.txt"
    vocab.write_text(" \na\nb\n", encoding="utf-8")
    for command in (
        ["info", "builtin:student", "--vocab", str(vocab)],
        ["infer", "--model", "builtin:student", "--vocab", str(vocab), "--text", "hi", "-o", str(tmp_path / "x.wav")],
    ):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert "the vocabulary has 3 units" in err and len(err.strip().splitlines()) == 1


def test_own_format_round_trip_needs_no_arguments(source, tmp_path):
    path = tmp_path / "mine.safetensors"
    flowtts.save(source, path, extra={"note": "test"})
    loaded = flowtts.load(path)
    assert loaded.config == source.config
    assert loaded.vocab_char_map == VOCAB
    assert loaded.metadata["note"] == "test"
    assert torch.equal(_out(loaded), _out(source))
    with pytest.raises(ValueError, match="carries its own architecture"):
        flowtts.load(path, preset="tiny")
    flowtts.save(source, tmp_path / "half.safetensors", dtype="bfloat16")
    assert flowtts.load(tmp_path / "half.safetensors").dtype == torch.float32  # computes in float32 by default
    assert flowtts.load(tmp_path / "half.safetensors", dtype="bfloat16").dtype == torch.bfloat16
    assert (tmp_path / "half.safetensors").stat().st_size < 0.6 * path.stat().st_size
    assert sorted(p.name for p in tmp_path.iterdir()) == ["half.safetensors", "mine.safetensors"]  # no temp files


FACTS = {"speed": "0.9", "ref_silence": "0.5", "target_rms": "0.05"}


def test_saving_keeps_what_the_file_says_about_its_data_and_extra_wins(source, tmp_path):
    from flowtts.synthesis import recommended_options

    model = copy.deepcopy(source)
    model.metadata = {**FACTS, "step": "7", "trained_with": "something else"}
    flowtts.save(model, tmp_path / "again.safetensors")
    again = flowtts.load(tmp_path / "again.safetensors")
    assert {k: again.metadata[k] for k in FACTS} == FACTS
    assert "step" not in again.metadata and "trained_with" not in again.metadata  # only the data's facts
    options = recommended_options(again)
    assert (options.speed, options.ref_silence, options.target_rms) == pytest.approx((0.9, 0.5, 0.05))
    flowtts.save(model, tmp_path / "faster.safetensors", extra={"speed": 1.1})
    assert flowtts.load(tmp_path / "faster.safetensors").metadata["speed"] == "1.1"
    flowtts.save(source, tmp_path / "plain.safetensors")  # no metadata: F5-TTS's values stay
    assert not set(FACTS) & set(flowtts.load(tmp_path / "plain.safetensors").metadata)
    model.metadata = {"target_rms": "-1"}
    with pytest.raises(ValueError, match="'target_rms' metadata must be a positive number"):
        flowtts.save(model, tmp_path / "bad.safetensors")
    assert not (tmp_path / "bad.safetensors").exists()


def test_builtin_teacher_loads_and_speaks_when_shipped():
    """Speaks: the built-in recogniser (a separately trained model) reads the held-out sentences the teacher
    says unprompted (as the built-in files ask) -- weights that were zero, or noise, would not be read."""
    from importlib.resources import files

    if not files("flowtts").joinpath("assets", "teacher.safetensors").is_file():
        pytest.skip("no built-in teacher in this checkout")
    from flowtts.eval.recognizer import normalize_text
    from flowtts.eval.wer import edit_distance
    from flowtts.train.data import MelDataset

    model = flowtts.load("builtin")
    assert model.dtype == torch.float32 and model.vocab_char_map is not None
    recognizer = flowtts.load_recognizer("builtin")
    held = MelDataset(str(files("flowtts").joinpath("assets", "prompts", "heldout")))
    errors = chars = 0
    for i in range(3):
        mel, text = held[i]
        out, trajectory = model.sample(
            torch.zeros(1, 1, model.num_channels), [text], 1 + mel.shape[0], steps=4, seed=i, no_ref_audio=True
        )
        assert out.shape == (1, 1 + mel.shape[0], model.num_channels) and torch.isfinite(out).all()
        heard, said = recognizer.transcribe(out[:, 1:])[0], normalize_text(text, recognizer.alphabet)
        errors, chars = errors + edit_distance(list(said), list(heard)), chars + len(said)
    assert errors / chars < 0.2, (errors / chars, heard, said)  # measured 0.03; zero weights: 1.0


def test_builtin_student_and_prompt_set_fit_the_teacher_when_shipped():
    from importlib.resources import files

    assets = files("flowtts").joinpath("assets")
    if not assets.joinpath("student.safetensors").is_file():
        pytest.skip("no built-in student in this checkout")
    from flowtts.synthesis import recommended_options
    from flowtts.train.data import MelDataset
    from flowtts.train.distill_config import check_compatible

    teacher, student = flowtts.load("builtin"), flowtts.load("builtin:student")
    check_compatible(teacher, student)
    options = recommended_options(student)
    assert options.steps < 32 and options.cfg_strength == 0.0  # few steps, guidance distilled away
    assert any(not torch.equal(a, b) for a, b in zip(teacher.state_dict().values(), student.state_dict().values()))
    for split in ("train", "heldout"):
        data = MelDataset(str(assets.joinpath("prompts", split)))
        assert len(data) > 0
        for i in range(len(data)):
            mel, text = data[i]
            assert mel.shape[1] == teacher.num_channels and text.strip()
            assert set(text) <= set(teacher.vocab_char_map)
