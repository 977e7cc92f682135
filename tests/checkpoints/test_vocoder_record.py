"""The ``vocoder`` record of a model file: shipped in the built-in models, kept in every file made from one."""

from __future__ import annotations

import copy

import pytest

import flowtts
from flowtts.audio.vocoders import GriffinLim, choose_vocoder
from flowtts.checkpoints.loader import read_metadata
from flowtts.checkpoints.official import CheckpointError
from flowtts.checkpoints.recorded import VOCODER_KEY, carried_metadata, recorded_vocoder
from flowtts.cli import main
from flowtts.model.build import build_model
from flowtts.vocoder.network import MelVocoder


@pytest.mark.parametrize("name", ["builtin", "builtin:student"])
def test_the_builtin_models_record_the_builtin_voice(name):
    from flowtts.checkpoints.loader import builtin_path

    assert read_metadata(builtin_path(name))[VOCODER_KEY] == "builtin"


def test_a_saved_or_averaged_copy_keeps_the_record_and_so_the_vocoder(tmp_path):
    teacher = flowtts.load("builtin")
    flowtts.save(copy.deepcopy(teacher), tmp_path / "copy.safetensors")
    again = flowtts.load(tmp_path / "copy.safetensors")
    assert recorded_vocoder(again) == "builtin" and isinstance(choose_vocoder(again), MelVocoder)
    plain = build_model("tiny")
    flowtts.save(plain, tmp_path / "plain.safetensors")
    assert VOCODER_KEY not in read_metadata(str(tmp_path / "plain.safetensors"))
    soup = str(tmp_path / "soup.safetensors")
    assert main(["average", str(tmp_path / "copy.safetensors"), "builtin", "-o", soup]) == 0
    assert read_metadata(soup)[VOCODER_KEY] == "builtin"
    assert isinstance(choose_vocoder(flowtts.load(str(tmp_path / "plain.safetensors"))), GriffinLim)


def test_a_distilled_student_keeps_its_teachers_record(tmp_path):
    from flowtts.sampling.recipe import SamplingRecipe
    from flowtts.train.data import MelDataset
    from flowtts.train.distill import distill
    from flowtts.train.distill_config import DISTILL_LOOP, DistillConfig, student_recipe
    from train.helpers import prepared_corpus, random_model

    corpus = prepared_corpus(str(tmp_path / "corpus"))
    teacher = random_model(corpus)
    teacher.metadata = {**(teacher.metadata or {}), VOCODER_KEY: "builtin", "speed": "0.9"}
    loop = DISTILL_LOOP.with_overrides(steps=1, save_every=1, log_every=1, warmup=1)
    config = DistillConfig(student=student_recipe(2), teacher=SamplingRecipe(steps=4), batch_size=2, loop=loop)
    distill(teacher, copy.deepcopy(teacher), MelDataset(corpus), str(tmp_path / "run"), config, progress=False)
    written = read_metadata(str(tmp_path / "run" / "student.safetensors"))
    assert written[VOCODER_KEY] == "builtin" and written["speed"] == "0.9"


def test_a_bad_record_is_refused_naming_the_key(tmp_path):
    model = build_model("tiny")
    model.metadata = {VOCODER_KEY: "bigvgan"}
    with pytest.raises(ValueError, match="'vocoder' metadata must be one of 'builtin', got 'bigvgan'"):
        carried_metadata(model)
    with pytest.raises(ValueError, match="'vocoder' metadata"):
        flowtts.save(model, tmp_path / "bad.safetensors")
    model.metadata = None
    flowtts.save(model, tmp_path / "odd.safetensors", extra={VOCODER_KEY: "Builtin"})  # extra is written as given
    with pytest.raises(CheckpointError, match="'vocoder' metadata must be one of 'builtin'"):
        flowtts.load(tmp_path / "odd.safetensors")


def test_a_model_trained_on_other_data_drops_the_record(tmp_path):
    """`flowtts train` may teach another voice: the file it writes does not claim the built-in one."""
    from flowtts.train.data import MelDataset
    from flowtts.train.trainer import TRAIN_LOOP, TrainConfig, train
    from train.helpers import prepared_corpus, random_model

    corpus = prepared_corpus(str(tmp_path / "corpus"))
    model = random_model(corpus)
    model.metadata = {**(model.metadata or {}), VOCODER_KEY: "builtin", "speed": "0.9"}
    loop = TRAIN_LOOP.with_overrides(steps=1, save_every=1, log_every=1, warmup=1)
    train(model, MelDataset(corpus), str(tmp_path / "run"), TrainConfig(loop=loop, batch_frames=400), progress=False)
    written = read_metadata(str(tmp_path / "run" / "model.safetensors"))
    assert VOCODER_KEY not in written and written["speed"] == "0.9"
