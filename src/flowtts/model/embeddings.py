"""Time, text and input embeddings of the DiT.

Shapes: ``b`` batch, ``n`` frames, ``nt`` text tokens, ``d`` widths.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from flowtts.model.modules import ConvNeXtV2Block, ConvPositionEmbedding, accurate_dtype


def sinusoidal_embedding(t: torch.Tensor, dim: int, scale: float = 1000.0) -> torch.Tensor:
    """``[sin, cos]`` features of ``scale * t`` (``b``) -> ``b dim``, in float32 (float64 for float64 ``t``)."""
    half = dim // 2
    freqs = torch.exp(torch.arange(half, device=t.device).float() * -(math.log(10000) / (half - 1)))
    args = scale * t.to(accurate_dtype(t.dtype))[:, None] * freqs[None, :]
    return torch.cat((args.sin(), args.cos()), dim=-1)


def text_position_table(dim: int, length: int, theta: float = 10000.0) -> torch.Tensor:
    """Sinusoidal table ``(length, dim)`` laid out ``[cos | sin]``, added to text embeddings."""
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 2)[: dim // 2].float() / dim))
    angles = torch.outer(torch.arange(length, dtype=torch.float32), freqs)
    return torch.cat((angles.cos(), angles.sin()), dim=-1)


class TimestepEmbedding(nn.Module):
    """Flow time in [0, 1] -> ``b d`` through sinusoidal features and an MLP."""

    def __init__(self, dim: int, freq_embed_dim: int = 256):
        super().__init__()
        self.freq_embed_dim = freq_embed_dim
        self.time_mlp = nn.Sequential(nn.Linear(freq_embed_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, timestep: torch.Tensor) -> torch.Tensor:
        hidden = sinusoidal_embedding(timestep, self.freq_embed_dim).to(timestep.dtype)
        return self.time_mlp(hidden)


def _average_upsample(text: torch.Tensor, valid: torch.Tensor, target_lens: torch.Tensor) -> torch.Tensor:
    """Spread each sample's valid tokens evenly over its ``target_lens`` frames.

    With ``L`` tokens and ``N`` frames every token covers ``N // L`` frames and the last ``N % L``
    tokens one frame more. Frames past ``target_lens`` (and samples with no tokens) stay zero.
    """
    b, n, _ = text.shape
    text_lens = valid.sum(dim=1)
    target = target_lens.to(text.device).long()
    safe_lens = text_lens.clamp(min=1)
    base = target // safe_lens
    rem = target % safe_lens
    token = torch.arange(n, device=text.device)[None, :]
    counts = base[:, None] + (token >= (text_lens - rem)[:, None]).long()
    counts = counts * (token < text_lens[:, None]).long()
    ends = counts.cumsum(dim=1)
    frames = torch.arange(n, device=text.device)[None, :].expand(b, n).contiguous()
    index = torch.searchsorted(ends, frames, right=True).clamp(max=n - 1)
    out = torch.gather(text, 1, index[..., None].expand(-1, -1, text.shape[-1]))
    keep = (frames < target[:, None]) & (text_lens > 0)[:, None]
    return out.masked_fill(~keep[..., None], 0.0)


class TextEmbedding(nn.Module):
    """Token ids (``-1`` = padding) -> frame-aligned text features ``b n d``.

    Ids are shifted by one so that ``0`` is the filler/padding token. Text longer than the frame
    count is cut to it (F5-TTS's behaviour; :class:`flowtts.CFM` makes sure durations are longer
    than the text). With ``conv_layers > 0`` sinusoidal positions and ConvNeXt-V2 blocks refine the
    embeddings; with ``mask_padding`` filler positions are zeroed around every block.
    """

    def __init__(
        self,
        text_num_embeds: int,
        text_dim: int,
        mask_padding: bool = True,
        average_upsampling: bool = False,
        conv_layers: int = 0,
        conv_mult: int = 2,
    ):
        super().__init__()
        if average_upsampling and not mask_padding:
            raise ValueError("text_embedding_average_upsampling=True requires text_mask_padding=True")
        self.text_dim = text_dim
        self.text_embed = nn.Embedding(text_num_embeds + 1, text_dim)
        self.mask_padding = mask_padding
        self.average_upsampling = average_upsampling
        self.extra_modeling = conv_layers > 0
        if self.extra_modeling:
            self.text_blocks = nn.Sequential(
                *[ConvNeXtV2Block(text_dim, text_dim * conv_mult) for _ in range(conv_layers)]
            )

    def forward(
        self,
        text: torch.Tensor,
        seq_len: int | torch.Tensor,
        drop_text: bool = False,
        independent: bool = False,
    ) -> torch.Tensor:
        """Embed ``text``; ``seq_len`` is an int or per-sample lengths ``b``.

        With ``independent`` and per-sample lengths, batch padding is excluded from every statistic
        (GRN norms), so each sample's embedding equals the one it gets alone in a batch of one.
        """
        text = text + 1
        per_sample = torch.is_tensor(seq_len)
        if per_sample:
            seq_len = seq_len.to(device=text.device, dtype=torch.long)
            max_len = int(seq_len.max())
        else:
            max_len = int(seq_len)
        text = text[:, :max_len]
        text = F.pad(text, (0, max_len - text.shape[1]), value=0)
        valid_pos = None
        if per_sample:
            valid_pos = torch.arange(max_len, device=text.device)[None, :] < seq_len[:, None]
            text = text.masked_fill(~valid_pos, 0)
        filler = text == 0
        if drop_text:
            text = torch.zeros_like(text)

        x = self.text_embed(text)
        if valid_pos is not None:
            x = x.masked_fill(~valid_pos[..., None], 0.0)

        if self.extra_modeling:
            positions = text_position_table(self.text_dim, max_len).to(device=x.device, dtype=x.dtype)
            if valid_pos is not None:
                positions = positions[None] * valid_pos[..., None].to(positions.dtype)
            x = x + positions
            frame_mask = valid_pos if independent else None
            if self.mask_padding:
                x = x.masked_fill(filler[..., None], 0.0)
            for block in self.text_blocks:
                x = block(x, frame_mask)
                if self.mask_padding:
                    x = x.masked_fill(filler[..., None], 0.0)

        if self.average_upsampling:
            target = seq_len if per_sample else torch.full((x.shape[0],), max_len, device=x.device)
            x = _average_upsample(x, ~filler, target)
        return x


class InputEmbedding(nn.Module):
    """``[noisy mel | cond mel | text]`` -> linear -> plus grouped-conv position embedding."""

    def __init__(self, mel_dim: int, text_dim: int, out_dim: int):
        super().__init__()
        self.proj = nn.Linear(mel_dim * 2 + text_dim, out_dim)
        self.conv_pos_embed = ConvPositionEmbedding(dim=out_dim)

    def forward(
        self,
        x: torch.Tensor,
        cond: torch.Tensor,
        text_embed: torch.Tensor,
        drop_audio_cond: bool = False,
        audio_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if drop_audio_cond:
            cond = torch.zeros_like(cond)
        x = self.proj(torch.cat((x, cond, text_embed), dim=-1))
        return self.conv_pos_embed(x, mask=audio_mask) + x
