"""Build a :class:`CFM` from a :class:`flowtts.config.ModelConfig` or a preset name."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from flowtts.config import ModelConfig, get_preset
from flowtts.model.cfm import CFM
from flowtts.model.dit import DiT
from flowtts.model.unett import UNetT

BACKBONE_CLASSES = {"DiT": DiT, "UNetT": UNetT}


def build_model(config: ModelConfig | str, vocab: Mapping[str, int] | None = None) -> CFM:
    """A freshly initialised model (F5-TTS's init; a DiT starts with zero output layers) for ``config``.

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
        BACKBONE_CLASSES[config.backbone](**config.backbone_kwargs()),
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


EMBEDDING_KEY = "transformer.text_embed.text_embed.weight"


def extend_vocab(model: CFM, tokens: Sequence[str], *, seed: int = 0) -> CFM:
    """A copy of ``model`` whose vocabulary also has ``tokens``, for fine-tuning on text it has no ids for.

    F5-TTS's fine-tuning tools do the same ("extend vocab"): the new tokens are appended to the
    vocabulary in the order given, every existing id and weight stays as it is, and the text embedding
    grows by one row per new token, drawn from N(0, 1) (as ``nn.Embedding`` initialises) by a generator
    seeded with ``seed``. The copy has no metadata (a student's sampling settings do not carry over).

    Args:
        model: A :class:`CFM` with a character vocabulary and its ``config`` (built or loaded by flowtts).
        tokens: New tokens (characters, or units such as pinyin syllables).
        seed: Seed of the new embedding rows.

    Raises:
        ValueError: No tokens, a token that is empty, has a newline, repeats or is in the vocabulary
            already, or a model without a character vocabulary or config.
    """
    vocab = model.vocab_char_map
    config = model.config
    if vocab is None or config is None:
        raise ValueError(
            "extend_vocab needs a model with a character vocabulary and its config "
            "(a UTF-8 byte model has no vocabulary to extend)"
        )
    tokens = list(tokens)
    if not tokens:
        raise ValueError("tokens is empty: nothing to add to the vocabulary")
    for token in tokens:
        if not isinstance(token, str) or not token or "\n" in token:
            raise ValueError(f"tokens must be non-empty strings without newlines, got {token!r}")
    known = sorted({t for t in tokens if t in vocab})
    if known:
        raise ValueError(f"tokens already in the vocabulary: {' '.join(repr(t) for t in known)}")
    if len(set(tokens)) != len(tokens):
        raise ValueError("tokens must not repeat")
    new_vocab = {**vocab, **{t: len(vocab) + i for i, t in enumerate(tokens)}}
    state = model.state_dict()
    old = state[EMBEDDING_KEY]
    g = torch.Generator().manual_seed(seed)
    rows = torch.randn(len(tokens), old.shape[1], generator=g, dtype=torch.float32)
    state[EMBEDDING_KEY] = torch.cat((old, rows.to(old)))
    grown = build_model(config, new_vocab)
    grown.load_state_dict(state)
    return grown.to(device=old.device, dtype=old.dtype)
