"""``F5TTS.infer`` against F5-TTS 1.1.22's own ``F5TTS.infer``: same checkpoint, clip, texts and seed.

Upstream runs its real code (``f5_tts.api.F5TTS.infer`` -> ``preprocess_ref_audio_text`` with pydub ->
``infer_process``), with stand-ins only for what cannot be installed here: torchaudio (``load``,
``Resample``, ``MelSpectrogram``, written from torchaudio's documented definitions), huggingface_hub's
downloads, transformers' ASR pipeline, vocos, cached_path/hydra/omegaconf (imported by ``api.py``, never
called) and the vocoder (one deterministic stand-in used by both sides). The model is a tiny random-weight
F5-TTS checkpoint (every parameter drawn, as upstream zero-initialises some layers), written in upstream's
format and loaded by each side's own loader.

One-chunk texts: the same samples (to 1e-4) and spectrogram. Texts of several chunks: the same chunks, the
same per-chunk durations and text units, the same total length (upstream draws every chunk's noise from one
global stream inside a thread pool, so its waves depend on thread order; flowtts seeds chunk ``j`` with
``seed + j``).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
import os
import sys
import types
from dataclasses import dataclass, field

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F

from upstream import load_upstream, needs_upstream

UPSTREAM = load_upstream()
parity_case = needs_upstream(UPSTREAM is not None)  # skips (fails in CI) only where F5-TTS is not installed

RATE, HOP, MELS = 24000, 256, 100
ARCH = dict(dim=64, depth=2, heads=4, dim_head=16, ff_mult=2, text_dim=32, conv_layers=2)
SOLVER = dict(nfe_step=4, cfg_strength=2.0, sway_sampling_coef=-1.0)
SEED = 1234

REF_TEXT = "A quiet breeze moved over the water at dawn."
GEN_ONE = "The little boat drifted slowly toward the shore."
GEN_LONG = (
    "The little boat drifted slowly toward the shore, where the old fisherman waited with a lantern. "
    "He had watched the well-known bay for forty years; every stone and every current was familiar to him. "
    "Was it the wind, or was it something else that carried the boat home tonight? Nobody could say! "
    "The villagers gathered on the pier: children, mothers, and the baker with flour still on his hands. "
    "When the bow touched the sand, a cheer rose up, and the fisherman finally set down his light. "
    "Later that night, the whole village sat by the fire and told the story again and again, "
    "each version a little grander than the one before."
)
ZH_REF = "今天早上的风很轻，水面很安静。"
ZH_GEN = "小船慢慢地漂向岸边，我们都在看着它。"
ZH_LONG = (
    "小船慢慢地漂向岸边，老渔夫提着灯在那里等着。他在这个海湾看了四十年的潮水；每一块石头他都认识。"
    "是风把船送回来的吗？没有人知道！村里的人都来到码头上，孩子们，母亲们，还有手上沾着面粉的面包师。"
    "船头碰到沙滩的时候，大家一起欢呼起来，渔夫终于放下了手里的灯。那天晚上，全村的人围坐在火边，"
    "一遍又一遍地讲着这个故事，每一次都比上一次更精彩。"
)


# ----------------------------------------------------------------------------------------------- stand-ins


class StandInResample(torch.nn.Module):
    """torchaudio.transforms.Resample(orig, new) with its defaults: a Hann-windowed sinc with 6 zero
    crossings and a roll-off of 0.99, polyphase by the gcd-reduced rates, ``ceil(new * n / orig)`` out."""

    def __init__(self, orig_freq, new_freq, lowpass_filter_width=6, rolloff=0.99):
        super().__init__()
        g = math.gcd(int(orig_freq), int(new_freq))
        self.orig, self.new = int(orig_freq) // g, int(new_freq) // g
        base = min(self.orig, self.new) * rolloff
        self.width = math.ceil(lowpass_filter_width * self.orig / base)
        idx = torch.arange(-self.width, self.width + self.orig, dtype=torch.float64)[None, None] / self.orig
        t = torch.arange(0, -self.new, -1, dtype=torch.float32)[:, None, None] / self.new + idx
        t = (t * base).clamp(-lowpass_filter_width, lowpass_filter_width)
        window = torch.cos(t * math.pi / lowpass_filter_width / 2) ** 2
        t = t * math.pi
        sinc = torch.where(t == 0, torch.ones_like(t), torch.sin(t) / t)
        self.kernel = (sinc * window * (base / self.orig)).float()

    def forward(self, wave):
        shape = wave.shape
        x = F.pad(wave.reshape(-1, shape[-1]), (self.width, self.width + self.orig))
        y = F.conv1d(x[:, None], self.kernel, stride=self.orig).transpose(1, 2).reshape(x.shape[0], -1)
        n = math.ceil(self.new * shape[-1] / self.orig)
        return y[..., :n].reshape(*shape[:-1], n)


class StandInMelSpectrogram(torch.nn.Module):
    """torchaudio.transforms.MelSpectrogram(power=1, center=True, norm=None): a centred, reflect-padded
    magnitude STFT (periodic Hann window) times torchaudio's HTK filterbank, built in float32 as it builds it."""

    def __init__(self, sample_rate, n_fft, win_length, hop_length, n_mels, power, center, normalized, norm):
        super().__init__()
        assert (power, center, normalized, norm) == (1, True, False, None)
        self.n_fft, self.win_length, self.hop_length = n_fft, win_length, hop_length
        n_freqs = n_fft // 2 + 1
        all_freqs = torch.linspace(0, sample_rate // 2, n_freqs)
        m_max = 2595.0 * math.log10(1.0 + (sample_rate / 2) / 700.0)
        f_pts = 700.0 * (10 ** (torch.linspace(0.0, m_max, n_mels + 2) / 2595.0) - 1.0)
        f_diff = f_pts[1:] - f_pts[:-1]
        slopes = f_pts.unsqueeze(0) - all_freqs.unsqueeze(1)
        down, up = (-1.0 * slopes[:, :-2]) / f_diff[:-1], slopes[:, 2:] / f_diff[1:]
        self.fb = torch.max(torch.zeros(1), torch.min(down, up))
        self.window = torch.hann_window(win_length)

    def forward(self, wave):
        spec = torch.stft(
            wave, self.n_fft, self.hop_length, self.win_length, self.window, center=True, pad_mode="reflect",
            normalized=False, onesided=True, return_complex=True,
        ).abs()  # fmt: skip
        return torch.matmul(spec.transpose(-1, -2), self.fb).transpose(-1, -2)


def stand_in_load(path):
    """torchaudio.load: ``(channels, frames)`` float32 (integers / full scale) and the rate."""
    data, rate = sf.read(path, dtype="float32", always_2d=True)
    return torch.from_numpy(data.T.copy()), rate


class StandInVocoder:
    """A fixed, deterministic mel -> wave map (``hop`` samples per frame) used by both sides."""

    def __init__(self):
        self.weight = torch.randn(MELS, HOP, generator=torch.Generator().manual_seed(0)) * 0.01

    def decode(self, mel):  # (b, d, n) -> (b, n * hop)
        frames = torch.tanh(mel.transpose(1, 2).float() @ self.weight)
        return frames.reshape(mel.shape[0], -1)

    __call__ = decode


def _refuse(*args, **kwargs):
    raise RuntimeError("not available in the parity test (no downloads, no ASR)")


def _module(name, **attributes):
    module = types.ModuleType(name)
    for key, value in attributes.items():
        setattr(module, key, value)
    return module


def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ValueError:  # in sys.modules without a spec: a placeholder
        return False


def _install_stand_ins(mp: pytest.MonkeyPatch) -> None:
    """Register stand-ins for the modules upstream's inference imports that are not installed."""
    placeholders = {
        "vocos": dict(Vocos=type("Vocos", (), {})),
        "transformers": dict(pipeline=_refuse),
        "cached_path": dict(cached_path=_refuse),
        "hydra": {},
        "hydra.utils": dict(get_class=_refuse),
        "omegaconf": dict(OmegaConf=type("OmegaConf", (), {"load": staticmethod(_refuse)})),
    }
    missing = {name for name in placeholders if name not in sys.modules and not _installed(name.split(".")[0])}
    for name in missing:
        mp.setitem(sys.modules, name, _module(name, **placeholders[name]))
    if not _installed("huggingface_hub"):
        mp.setitem(sys.modules, "huggingface_hub", _module("huggingface_hub", hf_hub_download=_refuse))
    torchaudio = sys.modules.get("torchaudio")
    if torchaudio is None or not hasattr(torchaudio, "load"):  # load_upstream's empty placeholder
        if torchaudio is None:
            torchaudio = _module("torchaudio")
            mp.setitem(sys.modules, "torchaudio", torchaudio)
        transforms = _module("torchaudio.transforms", Resample=StandInResample, MelSpectrogram=StandInMelSpectrogram)
        mp.setattr(torchaudio, "load", stand_in_load, raising=False)
        mp.setattr(torchaudio, "transforms", transforms, raising=False)
        mp.setitem(sys.modules, "torchaudio.transforms", transforms)
    cfm = importlib.import_module("f5_tts.model.cfm")
    mp.setattr(sys.modules["f5_tts.model"], "CFM", cfm.CFM, raising=False)  # `from f5_tts.model import CFM`


# ----------------------------------------------------------------------------------------------- clips


def speechlike(seconds: float, rate: int = RATE, seed: int = 0, channels: int = 1) -> np.ndarray:
    """Float samples ``(n, channels)`` that sound like words: voiced bursts with soft onsets between pauses
    at -62 dBFS, and 0.12 s of breath at about -46 dBFS at each end (between F5-TTS's -50 and -42 dBFS)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    out = np.zeros((n, channels))
    for c in range(channels):
        x = rng.normal(0, 10 ** (-62 / 20), n)
        edge = int(0.12 * rate)
        x[:edge] += rng.normal(0, 10 ** (-46 / 20), edge)
        x[-edge:] += rng.normal(0, 10 ** (-46 / 20), edge)
        position = edge
        while position < n - edge - int(0.15 * rate):
            length = min(int(rng.uniform(0.18, 0.42) * rate), n - edge - position)
            t = np.arange(length) / rate
            f0 = rng.uniform(110, 220)
            voiced = sum(
                rng.uniform(0.2, 1) / k * np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6)) for k in range(1, 9)
            )
            envelope = np.sin(np.pi * np.arange(length) / length) ** 1.5
            x[position : position + length] += 0.12 * envelope * voiced
            position += length + int(rng.uniform(0.04, 0.12) * rate)
        out[:, c] = x
    return out


def write_clip(path, samples: np.ndarray, rate: int = RATE) -> str:
    """A 16-bit WAV of ``samples`` (the integers are chosen here, so both sides read the same ones)."""
    ints = np.clip(np.round(samples * 32768), -32768, 32767).astype(np.int16)
    sf.write(path, ints, rate, subtype="PCM_16")
    return str(path)


# ----------------------------------------------------------------------------------------------- cases


@dataclass(frozen=True)
class Case:
    clip: str
    ref_text: str
    gen_text: str
    kwargs: dict = field(default_factory=dict)
    chunks: int = 1  # how many chunks upstream makes of it (checked)


CASES = {
    "one chunk": Case("base", REF_TEXT, GEN_ONE),
    "speed 0.8": Case("base", REF_TEXT, GEN_ONE, dict(speed=0.8)),
    "fix_duration 9 s": Case("base", REF_TEXT, GEN_ONE, dict(fix_duration=9.0)),
    "reference at 0.3x level": Case("quiet", REF_TEXT, GEN_ONE),
    "transcript without final punctuation": Case("base", REF_TEXT.rstrip("."), GEN_ONE),
    "long text (several chunks)": Case("base", REF_TEXT, GEN_LONG, chunks=3),
    "long text, fix_duration 40 s": Case("base", REF_TEXT, GEN_LONG, dict(fix_duration=40.0), chunks=3),
    "Chinese": Case("zh", ZH_REF, ZH_GEN),
    "Chinese, several chunks": Case("zh", ZH_REF, ZH_LONG, chunks=2),
    "clip with leading and trailing silence": Case("padded", REF_TEXT, GEN_ONE),
    "text under 10 bytes": Case("base", REF_TEXT, "Hi there"),
    "clip over 12 s": Case("long", " ".join([REF_TEXT] * 3), GEN_ONE),
    "stereo 44.1 kHz clip": Case("stereo", REF_TEXT, GEN_ONE),
}
ISSUE_CASES = list(CASES)[:6]  # the six rows of issue #37's table


@dataclass
class Run:
    wave: np.ndarray
    spec: np.ndarray
    chunks: list  # chunk texts, in order
    rows: list  # (text units, frames of reference + speech) of each sample() row, in call order
    prompt: int  # mel frames of the prepared reference


def _recorder(model, rows, prompts):
    original = model.sample

    def sample(cond, text, duration, **kwargs):
        frames = cond.shape[-1] // HOP + 1 if cond.ndim == 2 else cond.shape[1]  # upstream passes the wave
        prompts.append(frames)
        durations = duration.tolist() if torch.is_tensor(duration) else [duration] * len(text)
        for units, asked in zip(text, durations):
            units = list(units)
            # what sample() raises the duration to (text or prompt length + 1), in both implementations
            rows.append((tuple(units), max(asked, max(len(units), frames) + 1)))
        return original(cond, text, duration, **kwargs)

    return sample


@pytest.fixture(scope="module")
def sides(tmp_path_factory):
    """``(upstream F5TTS, flowtts F5TTS, clip paths, upstream's utils_infer)`` sharing one checkpoint."""
    folder = tmp_path_factory.mktemp("upstream_pipeline")
    before = set(sys.modules)
    with pytest.MonkeyPatch.context() as mp:
        _install_stand_ins(mp)
        utils = importlib.import_module("f5_tts.infer.utils_infer")
        api = importlib.import_module("f5_tts.api")
        _, dit = UPSTREAM
        from f5_tts.model.utils import convert_char_to_pinyin

        texts = [REF_TEXT, GEN_ONE, GEN_LONG, ZH_REF + ZH_GEN, ZH_LONG, "Hi there"]
        units = {u for row in convert_char_to_pinyin(texts) for u in row}
        vocab = [" "] + sorted((units | {chr(c) for c in range(33, 127)}) - {" "})
        vocab_path = folder / "vocab.txt"
        vocab_path.write_text("".join(f"{u}\n" for u in vocab), encoding="utf-8")

        mel_spec = dict(n_fft=1024, hop_length=HOP, win_length=1024, n_mel_channels=MELS, target_sample_rate=RATE)
        source = UPSTREAM[0](
            dit(**ARCH, text_num_embeds=len(vocab), mel_dim=MELS),
            mel_spec_kwargs=dict(mel_spec, mel_spec_type="vocos"),
            vocab_char_map={u: i for i, u in enumerate(vocab)},
        )
        g = torch.Generator().manual_seed(0)
        state = source.state_dict()
        for key, value in state.items():
            if value.is_floating_point() and not key.endswith("inv_freq"):
                value.copy_(torch.randn(value.shape, generator=g) * 0.04)
        from safetensors.torch import save_file

        checkpoint = str(folder / "model_1250000.safetensors")  # upstream's layout: the bare EMA dict
        save_file({f"ema_model.{k}": v.contiguous() for k, v in state.items()}, checkpoint)
        config = folder / "F5TTS_tiny.yaml"  # upstream's configs/<model>.yaml layout (JSON is YAML)
        config.write_text(json.dumps({"model": {"backbone": "DiT", "arch": ARCH, "mel_spec": mel_spec}}))

        theirs = api.F5TTS.__new__(api.F5TTS)  # its infer() on a model from its own loader
        theirs.ema_model = utils.load_model(dit, ARCH, checkpoint, vocab_file=str(vocab_path), device="cpu")
        theirs.vocoder, theirs.mel_spec_type = StandInVocoder(), "vocos"
        theirs.target_sample_rate, theirs.device = RATE, "cpu"
        from flowtts.api import F5TTS

        ours = F5TTS(model=str(config), ckpt_file=checkpoint, vocab_file=str(vocab_path), device="cpu")
        ours.vocoder = theirs.vocoder

        base = speechlike(3.2, seed=1)
        long_clip = np.concatenate(
            [np.concatenate((speechlike(3.6, seed=s), np.random.default_rng(s).normal(0, 10 ** -3.1, (31200, 1))))
             for s in (2, 3, 4, 5)]
        )  # fmt: skip
        padded = np.concatenate((np.zeros((36000, 1)), base, np.random.default_rng(9).normal(0, 1e-4, (36000, 1))))
        clips = {
            "base": write_clip(folder / "base.wav", base),
            "quiet": write_clip(folder / "quiet.wav", base * 0.3),
            "zh": write_clip(folder / "zh.wav", speechlike(3.4, seed=6)),
            "padded": write_clip(folder / "padded.wav", padded),
            "long": write_clip(folder / "long.wav", long_clip),
            "stereo": write_clip(folder / "stereo.wav", speechlike(3.2, rate=44100, seed=7, channels=2), 44100),
        }
        try:
            yield theirs, ours, clips, utils
        finally:
            for path in utils._ref_audio_cache.values():
                if os.path.exists(path):
                    os.remove(path)
            utils._ref_audio_cache.clear()
            for name in set(sys.modules) - before:  # upstream's inference modules, imported with stand-ins
                if name.startswith("f5_tts"):
                    del sys.modules[name]


def run_upstream(sides, case: Case, monkeypatch) -> Run:
    theirs, _, clips, utils = sides
    rows, prompts, chunks = [], [], []
    monkeypatch.setattr(theirs.ema_model, "sample", _recorder(theirs.ema_model, rows, prompts))
    chunk_text = utils.chunk_text
    monkeypatch.setattr(utils, "chunk_text", lambda *a, **k: chunks.extend(chunk_text(*a, **k)) or list(chunks))
    wave, rate, spec = theirs.infer(
        clips[case.clip], case.ref_text, case.gen_text, show_info=lambda *a: None, progress=None, seed=SEED,
        **SOLVER, **case.kwargs,
    )  # fmt: skip
    assert rate == RATE
    monkeypatch.undo()
    return Run(np.asarray(wave), spec, chunks, rows, prompts[0])


def run_flowtts(sides, case: Case, monkeypatch, pipeline=None) -> Run:
    _, ours, clips, _ = sides
    import flowtts.text.chunking as chunking

    rows, prompts, chunks = [], [], []
    monkeypatch.setattr(ours.ema_model, "sample", _recorder(ours.ema_model, rows, prompts))
    chunk_text = chunking.chunk_text_f5tts
    monkeypatch.setattr(chunking, "chunk_text_f5tts", lambda *a: chunks.extend(chunk_text(*a)) or list(chunks))
    wave, rate, spec = ours.infer(
        clips[case.clip], case.ref_text, case.gen_text, show_info=lambda *a: None, progress=False, seed=SEED,
        pipeline=pipeline, **SOLVER, **case.kwargs,
    )  # fmt: skip
    assert rate == RATE
    monkeypatch.undo()
    return Run(wave, spec, chunks, rows, prompts[0])


@parity_case
@pytest.mark.parametrize("name", list(CASES))
def test_f5tts_infer_gives_upstreams_output(sides, monkeypatch, name):
    case = CASES[name]
    theirs, ours = run_upstream(sides, case, monkeypatch), run_flowtts(sides, case, monkeypatch)
    assert len(theirs.chunks) == case.chunks
    assert ours.chunks == theirs.chunks
    assert ours.prompt == theirs.prompt  # the prepared reference's mel frames
    assert sorted(ours.rows) == sorted(theirs.rows)  # what each chunk reads (units) and its duration
    assert ours.wave.shape == theirs.wave.shape and ours.spec.shape == theirs.spec.shape
    if case.chunks == 1:  # one noise draw, seeded alike: the same samples
        assert np.abs(theirs.wave).mean() > 1e-3
        assert np.abs(ours.wave - theirs.wave).max() < 1e-4
        assert np.abs(ours.spec - theirs.spec).max() < 1e-4


@parity_case
def test_the_flowtts_pipeline_is_still_flowtts_own(sides, monkeypatch):
    """pipeline="flowtts" on an F5-TTS checkpoint: flowtts's rules (the output differs from upstream's)."""
    case = CASES["one chunk"]
    theirs, ours = run_upstream(sides, case, monkeypatch), run_flowtts(sides, case, monkeypatch, "flowtts")
    assert ours.chunks == []  # flowtts's own chunker
    assert ours.rows[0][0][-len(GEN_ONE) - 2 :] == tuple(". " + GEN_ONE)  # "... dawn. " + text: one space
    assert ours.spec.shape[1] != theirs.spec.shape[1]


def frame_table(sides, monkeypatch, names=ISSUE_CASES) -> list[tuple[str, int, int, int]]:
    """``(case, upstream frames, flowtts "f5tts" frames, flowtts "flowtts" frames)`` of generated mel."""
    table = []
    for name in names:
        case = CASES[name]
        up = run_upstream(sides, case, monkeypatch).spec.shape[1]
        new = run_flowtts(sides, case, monkeypatch).spec.shape[1]
        old = run_flowtts(sides, case, monkeypatch, "flowtts").spec.shape[1]
        table.append((name, up, new, old))
    return table


@parity_case
def test_chunks_and_transcript_endings_are_upstreams(sides):
    _, _, clips, utils = sides
    from flowtts.synthesis.pipeline import end_transcript
    from flowtts.text.chunking import chunk_text_f5tts

    texts = [GEN_LONG, ZH_LONG, "  Leading space. Then more,and a comma; done!  ", "One.\nTwo.\n\nThree?"]
    texts += ["x", "a。b，c", "Mixed 中文 and English. 再来一句！Done."]
    for text in texts:
        for size in (0, 5, 20, 60, 135, 288, 1000):
            assert chunk_text_f5tts(text, size) == utils.chunk_text(text, max_chars=size), (text, size)
    for ref_text in ("Hello", "Hello.", "Hello. ", "Hello!", "Hello ", "你好。", "你好", "Hi.\n"):
        _, ended = utils.preprocess_ref_audio_text(clips["base"], ref_text, show_info=lambda *a: None)
        assert end_transcript(ref_text) == ended, ref_text


def _quiet_gaps(sides) -> np.ndarray:
    """A wave with pauses of several lengths and levels, some long enough for remove_silence to shorten."""
    rng = np.random.default_rng(3)
    parts = []
    for seconds, level in ((0.7, 0), (1.4, -70), (0.9, -55), (2.3, -49), (1.1, -80), (0.3, -90)):
        parts += [speechlike(1.0, seed=int(seconds * 10))[:, 0], rng.normal(0, 10 ** (level / 20), int(seconds * RATE))]
    return np.concatenate([rng.normal(0, 1e-4, 30000), *parts]).astype(np.float32)


@parity_case
def test_remove_silence_writes_upstreams_file_and_infer_returns_the_wave_unshortened(sides, monkeypatch, tmp_path):
    theirs, ours, clips, _ = sides
    wave = _quiet_gaps(sides)
    theirs.export_wav(wave, str(tmp_path / "theirs.wav"), remove_silence=True)  # sf.write, then pydub
    ours.export_wav(wave, tmp_path / "ours.wav", remove_silence=True)
    a, _ = sf.read(tmp_path / "theirs.wav", dtype="int16")
    b, _ = sf.read(tmp_path / "ours.wav", dtype="int16")
    assert len(a) < len(wave) - RATE and np.array_equal(a, b)

    case = CASES["one chunk"]
    plain = run_upstream(sides, case, monkeypatch).wave
    written = dict(remove_silence=True, file_wave=str(tmp_path / "o.wav"))
    shortened = Case(case.clip, case.ref_text, case.gen_text, written)
    run = run_flowtts(sides, shortened, monkeypatch)
    assert np.abs(run.wave - plain).max() < 1e-4  # F5-TTS: remove_silence shortens the file only
    with_flowtts_rules = ours.infer(
        clips["base"], REF_TEXT, GEN_ONE, show_info=lambda *a: None, progress=False, seed=SEED, **SOLVER,
        pipeline="flowtts",
    )[0]  # fmt: skip
    assert with_flowtts_rules.shape != plain.shape


@parity_case
def test_the_cli_with_upstream_spellings_or_a_toml_config_gives_upstreams_output(sides, monkeypatch, tmp_path):
    import flowtts.audio.vocoders as vocoders
    from flowtts.cli import main

    theirs, ours, clips, _ = sides
    monkeypatch.setattr(vocoders, "choose_vocoder", lambda *a, **k: theirs.vocoder)
    expected = run_upstream(sides, CASES["one chunk"], monkeypatch).wave
    monkeypatch.setattr(vocoders, "choose_vocoder", lambda *a, **k: theirs.vocoder)
    folder = os.path.dirname(ours.model_name)
    files = dict(p=ours.model_name, v=os.path.join(folder, "vocab.txt"), cfg=os.path.join(folder, "F5TTS_tiny.yaml"))
    flags = ["-p", files["p"], "-v", files["v"], "--model_cfg", files["cfg"], "-r", clips["base"], "-s", REF_TEXT]
    flags += ["-t", GEN_ONE, "--nfe_step", "4", "--cfg_strength", "2", "--sway_sampling_coef", "-1"]
    flags += ["--seed", str(SEED)]
    assert main(["infer", *flags, "-o", str(tmp_path), "-w", "flags.wav", "-q"]) == 0
    config = tmp_path / "basic.toml"
    config.write_text(
        f'ckpt_file = "{files["p"]}"\nvocab_file = "{files["v"]}"\nmodel_cfg = "{files["cfg"]}"\n'
        f'ref_audio = "{clips["base"]}"\nref_text = "{REF_TEXT}"\ngen_text = "{GEN_ONE}"\n'
        f'nfe_step = 4\ncfg_strength = 2.0\nsway_sampling_coef = -1.0\noutput_dir = "{tmp_path}"\n'
        'output_file = "toml.wav"\n'
    )
    from_config = ["infer", "-c", str(config), "--seed", str(SEED), "-q"]
    assert main(from_config) == 0
    assert main([*from_config, "--pipeline", "flowtts", "-o", str(tmp_path / "own.wav")]) == 0
    for name in ("flags.wav", "toml.wav"):
        written, rate = sf.read(tmp_path / name, dtype="float32")
        assert rate == RATE and written.shape == expected.shape
        assert np.abs(written - expected).max() < 1e-4  # 16-bit file
    assert sf.info(str(tmp_path / "own.wav")).frames != expected.size
