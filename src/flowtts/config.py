"""Model configurations as frozen dataclasses, and the published F5-TTS architectures as presets."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class MelConfig:
    """Mel front end (F5-TTS's ``mel_spec_kwargs``)."""

    target_sample_rate: int = 24_000
    n_mel_channels: int = 100
    hop_length: int = 256
    win_length: int = 1024
    n_fft: int = 1024
    mel_spec_type: str = "vocos"


BACKBONES = ("DiT", "UNetT")


@dataclass(frozen=True)
class ModelConfig:
    """Backbone architecture plus mel front end; ``text_num_embeds`` comes from the vocabulary.

    ``backbone`` is ``"DiT"`` (F5-TTS) or ``"UNetT"`` (E2-TTS); fields one backbone lacks are ignored by
    it (``text_embedding_average_upsampling`` and ``long_skip_connection`` are DiT-only,
    ``skip_connect_type`` UNetT-only). ``text_dim=None`` means the mel channel count (E2-TTS).
    """

    dim: int
    depth: int
    heads: int
    ff_mult: float = 2
    text_dim: int | None = 512
    dim_head: int = 64
    text_mask_padding: bool = True
    conv_layers: int = 4
    pe_attn_head: int | None = None
    qk_norm: str | None = None
    dropout: float = 0.1
    text_embedding_average_upsampling: bool = False
    long_skip_connection: bool = False
    text_num_embeds: int = 256
    mel: MelConfig = field(default_factory=MelConfig)
    method: str = "euler"
    backbone: str = "DiT"
    skip_connect_type: str = "concat"

    def __post_init__(self):
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {BACKBONES}, got {self.backbone!r}")

    def backbone_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the backbone class (:class:`flowtts.DiT` or :class:`flowtts.UNetT`)."""
        common = dict(
            dim=self.dim,
            depth=self.depth,
            heads=self.heads,
            dim_head=self.dim_head,
            dropout=self.dropout,
            ff_mult=self.ff_mult,
            mel_dim=self.mel.n_mel_channels,
            text_num_embeds=self.text_num_embeds,
            text_dim=self.text_dim,
            text_mask_padding=self.text_mask_padding,
            qk_norm=self.qk_norm,
            conv_layers=self.conv_layers,
            pe_attn_head=self.pe_attn_head,
        )
        if self.backbone == "UNetT":
            return {**common, "skip_connect_type": self.skip_connect_type}
        return {
            **common,
            "text_embedding_average_upsampling": self.text_embedding_average_upsampling,
            "long_skip_connection": self.long_skip_connection,
        }

    def with_vocab_size(self, n: int) -> ModelConfig:
        return dataclasses.replace(self, text_num_embeds=n)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        data = dict(data)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        mel = MelConfig(**data.pop("mel", {}))
        return cls(mel=mel, **data)


_V1 = dict(ff_mult=2, text_dim=512, conv_layers=4, text_mask_padding=True, pe_attn_head=None)
_V0 = dict(ff_mult=2, text_dim=512, conv_layers=4, text_mask_padding=False, pe_attn_head=1)
_E2 = dict(backbone="UNetT", ff_mult=4, text_dim=None, conv_layers=0, text_mask_padding=False, pe_attn_head=1)

PRESETS: dict[str, ModelConfig] = {
    "F5TTS_v1_Base": ModelConfig(dim=1024, depth=22, heads=16, **_V1),
    "F5TTS_v1_Small": ModelConfig(dim=768, depth=18, heads=12, **_V1),
    "F5TTS_Base": ModelConfig(dim=1024, depth=22, heads=16, **_V0),
    "F5TTS_Small": ModelConfig(dim=768, depth=18, heads=12, **_V0),
    "E2TTS_Base": ModelConfig(dim=1024, depth=24, heads=16, **_E2),
    "E2TTS_Small": ModelConfig(dim=768, depth=20, heads=12, **_E2),
    # For tests, demos and the built-in teacher: about 6M parameters, seconds per utterance on a CPU.
    "tiny": ModelConfig(
        dim=256, depth=6, heads=4, ff_mult=2, text_dim=128, conv_layers=2, text_embedding_average_upsampling=True
    ),
}


def get_preset(name: str) -> ModelConfig:
    """The preset called ``name``; raises ``ValueError`` listing the known names otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}") from None
