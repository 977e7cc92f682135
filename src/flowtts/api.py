"""A drop-in for F5-TTS's Python API (``f5_tts.api.F5TTS``): load once, then ``infer()`` text + reference.

Upstream code such as ::

    from f5_tts.api import F5TTS
    tts = F5TTS(ckpt_file="model_1250000.safetensors", vocab_file="vocab.txt")
    wav, sr, spec = tts.infer(ref_file="ref.wav", ref_text="...", gen_text="...", file_wave="out.wav", seed=0)

runs with ``from flowtts.api import F5TTS``. Differences: nothing is downloaded (``model`` is
``"builtin"`` by default, or names the architecture of ``ckpt_file``), the vocoder is the built-in neural
one for the built-in models and Griffin-Lim for F5-TTS checkpoints unless ``vocoder_local_path`` names a
local Vocos directory (``vocoder`` chooses another: :func:`flowtts.audio.vocoders.choose_vocoder`), an
empty ``ref_text`` is transcribed with offline
pocketsphinx (English only) instead of Whisper, and ``nfe_step``/``cfg_strength``/``sway_sampling_coef``
default to what the model was made for (F5-TTS's 32/2/-1, or a distilled student's own settings).

With an F5-TTS checkpoint, ``infer`` runs F5-TTS 1.1.22's own pipeline (:mod:`flowtts.synthesis.pipeline`:
reference clipping and level, transcript endings, chunking, durations, the reference cut, the cross-fade):
a one-chunk text gives upstream's samples for the same seed and vocoder; ``pipeline="flowtts"`` gives
flowtts's cleaner rules instead. Unlike upstream, the global RNGs are left alone (the noise comes from
a generator seeded with ``seed``, chunk ``j`` of a long text from ``seed + j``).
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import torch

from flowtts.audio.transcribe import transcribe_reference
from flowtts.synthesis import load_reference, recommended_options, synthesize
from flowtts.synthesis.seeds import choose_seed
from flowtts.utils.plotting import save_mel_png


class F5TTS:
    """A loaded model and vocoder, ready for :meth:`infer`.

    Args:
        model: ``"builtin"``, ``"builtin:student"``, a flowtts or F5-TTS checkpoint path, or, with
            ``ckpt_file``, that checkpoint's architecture: a preset name (e.g. ``"F5TTS_v1_Base"``), an
            F5-TTS model config file (``.yaml``, as upstream's ``configs/<model>.yaml``) or a
            :class:`flowtts.config.ModelConfig`.
        ckpt_file: Checkpoint to load (``.safetensors`` or ``.pt``); empty: ``model`` is the file.
        vocab_file: ``vocab.txt`` an official checkpoint was trained with.
        ode_method: ``"euler"`` or ``"midpoint"``.
        use_ema: Take the EMA weights of a ``.pt`` training checkpoint.
        vocoder_local_path: Local Vocos directory (``config.yaml`` + weights); default: ``vocoder``'s choice.
        device: Default: CUDA when available, else CPU.
        hf_cache_dir: Upstream's download cache; accepted so upstream calls run unchanged, and unused:
            flowtts downloads nothing (weights come from ``model``/``ckpt_file`` on disk).
        quantize: ``"int8"``: the network's matrix products in int8 (CPU only; see :func:`flowtts.quantize`).
        vocoder: ``"auto"`` (the built-in neural vocoder for models whose file records the built-in voice,
            else Griffin-Lim), ``"builtin"``, ``"griffin-lim"`` or a flowtts vocoder file (flowtts's addition;
            :func:`flowtts.audio.vocoders.choose_vocoder`).

    Raises:
        ValueError: A preset name without ``ckpt_file`` (there is nothing to download it from), an
            unknown ``ode_method``, a ``device`` this machine does not have, a bad ``vocoder`` or one for
            another mel front end.
        FileNotFoundError, flowtts.checkpoints.CheckpointError: As :func:`flowtts.load`.
    """

    def __init__(
        self,
        model: str = "builtin",
        ckpt_file: str | os.PathLike = "",
        vocab_file: str | os.PathLike = "",
        ode_method: str = "euler",
        use_ema: bool = True,
        vocoder_local_path: str | os.PathLike | None = None,
        device: str | torch.device | None = None,
        hf_cache_dir: str | os.PathLike | None = None,
        quantize: str | None = None,
        vocoder: str | os.PathLike = "auto",
    ):
        from flowtts.audio.vocoders import check_vocoder_choice, choose_vocoder
        from flowtts.checkpoints.loader import load, resolve_device
        from flowtts.checkpoints.model_config import read_model_config
        from flowtts.config import PRESETS, ModelConfig
        from flowtts.sampling.solvers import STEP_RULES
        from flowtts.synthesis.pipeline import default_pipeline

        if ode_method not in STEP_RULES:
            raise ValueError(f"ode_method must be one of {tuple(STEP_RULES)}, got {ode_method!r}")
        check_vocoder_choice(vocoder)
        if ckpt_file:
            path, preset = ckpt_file, (model if model in PRESETS else None)
            if isinstance(model, ModelConfig):
                preset = model
            elif str(model).endswith((".yaml", ".yml")):  # upstream reads configs/<model>.yaml; here any such file
                preset = read_model_config(model)
        elif isinstance(model, ModelConfig):
            raise ValueError("a ModelConfig names an architecture: pass ckpt_file=<its checkpoint>")
        elif model in PRESETS:
            raise ValueError(
                f"model={model!r} names an architecture and flowtts downloads no weights: pass "
                "ckpt_file=<its checkpoint> (or model='builtin')"
            )
        else:
            path, preset = model, None
        self.device = resolve_device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.ema_model = load(
            path, preset=preset, vocab=vocab_file or None, use_ema=use_ema, device=self.device, quantize=quantize
        )
        self.ema_model.odeint_kwargs = {"method": ode_method}
        self.vocoder = choose_vocoder(self.ema_model, vocoder, vocoder_local_path)  # runs on the CPU
        self.target_sample_rate = self.ema_model.mel_spec.target_sample_rate
        self.mel_spec_type = self.ema_model.mel_spec.mel_spec_type
        self.seed = -1
        self.model_name = os.fspath(path)  # how the user named the model, for messages
        # F5-TTS's own pipeline for its checkpoints, flowtts's for flowtts's files (see flowtts.synthesis.pipeline)
        self.pipeline = default_pipeline(self.ema_model)

    def transcribe(self, ref_audio: str | os.PathLike, language: str | None = None) -> str:
        """Transcript of an audio file (offline pocketsphinx: English only).

        Raises:
            ValueError: ``language`` other than English, or nothing recognised.
            ImportError: pocketsphinx is not installed (``pip install 'flowtts[eval]'``).
        """
        from flowtts.audio.io import read_audio

        if language is not None and language.lower() not in ("en", "english"):
            raise ValueError(f"language must be English ('en') for the offline recogniser, got {language!r}")
        wave, rate = read_audio(ref_audio)
        return transcribe_reference(wave, rate)

    def infer(
        self,
        ref_file: str | os.PathLike | None,
        ref_text: str,
        gen_text: str,
        show_info=print,
        progress=True,
        target_rms: float | None = None,
        cross_fade_duration: float = 0.15,
        sway_sampling_coef: float | None = None,
        cfg_strength: float | None = None,
        nfe_step: int | None = None,
        speed: float = 1.0,
        fix_duration: float | None = None,
        remove_silence: bool = False,
        file_wave: str | os.PathLike | None = None,
        file_spec: str | os.PathLike | None = None,
        seed: int | None = None,
        continue_reference: bool | None = None,
        pipeline: str | None = None,
    ) -> tuple[np.ndarray, int, np.ndarray]:
        """Speak ``gen_text`` in the voice of ``ref_file``.

        Args:
            ref_file: Reference clip (``None``: the built-in one, with its transcript unless given).
            ref_text: Its transcript; empty: transcribed offline (English), reported via ``show_info``.
            gen_text: Text to speak (chunked at sentence ends when long, unless ``fix_duration``).
            show_info: Called with informational messages (``print`` by default, as upstream).
            progress: Show a progress bar (anything falsy hides it; upstream passes ``tqdm``).
            target_rms: Quieter references are raised to this RMS and the output lowered back (``None``:
                the level the model file records, else F5-TTS's 0.1).
            cross_fade_duration: Seconds of cross-fade between chunks.
            sway_sampling_coef, cfg_strength, nfe_step: Solver settings; ``None``: the model's own.
            speed: Speaking rate (the duration estimate is divided by it).
            fix_duration: Seconds of reference + generated speech (replaces the estimate).
            remove_silence: Shorten silences over 1 s in the output (F5-TTS's pipeline, as F5-TTS: in
                ``file_wave`` only, the wave returned keeps them).
            file_wave: Also write the wave here.
            file_spec: Also write the generated mel as a PNG here (needs matplotlib).
            seed: Noise seed; ``None`` or negative: a random one (kept in ``self.seed``).
            continue_reference: Continue the reference clip (F5-TTS), or with ``False`` speak unprompted, the
                clip setting only rate and level; ``None``: what the model file records (flowtts's addition).
            pipeline: ``"f5tts"``: F5-TTS 1.1.22's own preparation, chunking, durations and cut, so that an
                F5-TTS checkpoint gives upstream's output; ``"flowtts"``: flowtts's cleaner rules; ``None``:
                ``self.pipeline`` (F5-TTS's for F5-TTS checkpoints, flowtts's for flowtts's files). See
                :mod:`flowtts.synthesis.pipeline` (flowtts's addition).

        Returns:
            ``(wave, sample_rate, spec)``: float32 samples ``(nw,)``, the rate, the generated log-mel ``(d, n)``.

        Warns:
            flowtts.synthesis.clip_note.ClipNotCloned: ``ref_file`` given to a model whose file says it will
                not take that clip's voice (the built-in models: one voice).

        Raises:
            ValueError: Empty ``gen_text``, an option out of range, unreadable or too short audio.
            ImportError: No ``ref_text`` and no pocketsphinx.
        """
        from flowtts.synthesis import check_options
        from flowtts.synthesis.clip_note import warn_clip_note

        _check_texts(gen_text, ref_text)
        _check_numbers(nfe_step, seed)
        _check_outputs(file_wave, file_spec)
        options = recommended_options(
            self.ema_model,
            steps=nfe_step,
            cfg_strength=cfg_strength,
            sway_sampling_coef=sway_sampling_coef,
            speed=speed,
            target_rms=target_rms,
            cross_fade_seconds=cross_fade_duration,
            fix_duration=fix_duration,
            remove_silence=remove_silence,
            continue_reference=continue_reference,
            pipeline=pipeline or self.pipeline,
        )
        check_options(options)
        shorten_file = options.pipeline == "f5tts" and options.remove_silence
        if shorten_file:  # F5-TTS's quirk (api.py:143-144): only the file written loses its silences
            options = dataclasses.replace(options, remove_silence=False)
        warn_clip_note(
            self.ema_model, self.model_name, has_clip=ref_file is not None, continue_reference=continue_reference
        )
        reference = load_reference(
            self.ema_model,
            None if ref_file is None else os.fspath(ref_file),
            ref_text,
            options,
            on_transcript=lambda text: show_info(f"reference transcribed (pocketsphinx): {text!r}"),
            transcribe=transcribe_reference,
        )
        self.seed = choose_seed(seed)
        (result,) = synthesize(
            self.ema_model,
            reference,
            [gen_text],
            vocoder=self.vocoder,
            options=options,
            seeds=[self.seed],
            progress=bool(progress),
        )
        wave, spec = result.wave.numpy().astype(np.float32), result.mel.numpy()
        if file_wave is not None:
            self._export(wave, file_wave, shorten_file, options.pipeline)
        if file_spec is not None:
            self.export_spectrogram(spec, file_spec)
        return wave, self.target_sample_rate, spec

    def export_wav(self, wav, file_wave: str | os.PathLike, remove_silence: bool = False) -> None:
        """Write samples at the model's rate (optionally shortening long silences first, by the rules of
        ``self.pipeline``)."""
        self._export(wav, file_wave, remove_silence, self.pipeline)

    def _export(self, wav, file_wave, remove_silence: bool, pipeline: str) -> None:
        from flowtts.audio.io import write_audio

        wave = torch.as_tensor(np.asarray(wav, dtype=np.float32))
        if remove_silence and pipeline == "f5tts":
            from flowtts.synthesis.pipeline import remove_silence as shorten_f5tts

            wave = shorten_f5tts(wave, self.target_sample_rate)
        elif remove_silence:
            from flowtts.audio.silence import remove_silence as shorten

            wave = shorten(wave, self.target_sample_rate)
        write_audio(file_wave, wave, self.target_sample_rate)

    def export_spectrogram(self, spec, file_spec: str | os.PathLike) -> None:
        """Write a log-mel ``(d, n)`` as a PNG (needs matplotlib)."""
        save_mel_png(torch.as_tensor(np.asarray(spec)), os.fspath(file_spec))


def _check_texts(gen_text, ref_text) -> None:
    if not isinstance(gen_text, str):
        raise TypeError(f"gen_text must be a string, got {type(gen_text).__name__}")
    if not gen_text.strip():
        raise ValueError("gen_text is empty")
    if not isinstance(ref_text, str):
        raise TypeError(f"ref_text must be a string (empty: transcribed), got {type(ref_text).__name__}")


def _check_numbers(nfe_step, seed) -> None:
    from flowtts.model.sample_checks import SEED_RANGE, is_int

    if nfe_step is not None and (not is_int(nfe_step) or nfe_step < 1):
        raise ValueError(f"nfe_step must be an integer >= 1, got {nfe_step!r}")
    if seed is not None and (not is_int(seed) or not SEED_RANGE[0] <= seed <= SEED_RANGE[1]):
        raise ValueError(f"seed must be None, -1 (random) or a non-negative integer, got {seed!r}")


def _check_outputs(file_wave, file_spec) -> None:
    """Raise before any work when a file to write cannot be written."""
    if file_wave is not None:
        from flowtts.audio.io import check_audio_output

        check_audio_output(file_wave)
    if file_spec is not None:
        from flowtts.utils.plotting import check_picture_output

        check_picture_output(os.fspath(file_spec))
