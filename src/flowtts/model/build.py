"""Build a :class:`CFM` from a :class:`flowtts.config.ModelConfig` or a preset name."""

from __future__ import annotations

from collections.abc import Mapping

from flowtts.config import ModelConfig, get_preset
from flowtts.model.cfm import CFM
from flowtts.model.dit import DiT


def build_model(config: ModelConfig | str, vocab: Mapping[str, int] | None = None) -> CFM:
    """A freshly initialised model (F5-TTS's init: zero output layers) for ``config``.

    Args:
        config: A :class:`ModelConfig` or a preset name.
        vocab: Character vocabulary; its size sets ``text_num_embeds``. ``None`` keeps the config's
            size and tokenizes UTF-8 bytes.
    """
    if isinstance(config, str):
        config = get_preset(config)
    if vocab is not None:
        config = config.with_vocab_size(len(vocab))
    model = CFM(
        DiT(**config.dit_kwargs()),
        mel_spec_kwargs=dict(
            target_sample_rate=config.mel.target_sample_rate,
            n_mel_channels=config.mel.n_mel_channels,
            hop_length=config.mel.hop_length,
            win_length=config.mel.win_length,
            n_fft=config.mel.n_fft,
            mel_spec_type=config.mel.mel_spec_type,
        ),
        odeint_kwargs={"method": config.method},
        vocab_char_map=dict(vocab) if vocab is not None else None,
    )
    model.config = config
    return model
