"""UNetT backbone of E2-TTS (F5-TTS's ``E2TTS_Base``/``E2TTS_Small``): a flat U-Net transformer.

Shapes: ``b`` batch, ``n`` frames, ``nt`` text tokens, ``d`` mel channels.

E2-TTS feeds the text as extra input channels (no ConvNeXt refinement by default), prepends the time
embedding to the frames as one more token, and links block ``i`` of the first half to block
``depth - 1 - i`` of the second half (concatenation + projection by default). Plain pre-norm blocks
(RMSNorm, attention, feed-forward) replace the DiT's AdaLN modulation.

Like :class:`flowtts.DiT`, the module keeps no text cache: :meth:`UNetT.condition` computes what the
steps of one sampling call share and :meth:`UNetT.velocity` runs one step, so :class:`flowtts.CFM`
samples, trains and differentiates through either backbone the same way.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from flowtts.model.conditioning import Conditioning, condition_inputs, step_inputs
from flowtts.model.embeddings import InputEmbedding, TextEmbedding, TimestepEmbedding
from flowtts.model.modules import Attention, FeedForward, RotaryEmbedding
from flowtts.sampling.checkpoint import checkpoint

SKIP_CONNECT_TYPES = ("concat", "add", "none")


class ScaledRMSNorm(nn.Module):
    """RMS normalisation as x_transformers computes it (upstream's UNetT uses it): ``x / |x| * sqrt(d) * g``.

    The gain is called ``g`` (F5-TTS's E2 checkpoints store ``...g``).
    """

    def __init__(self, dim: int):
        super().__init__()
        self.scale = math.sqrt(dim)
        self.g = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=-1) * self.scale * self.g


class UNetT(nn.Module):
    """Flat U-Net transformer over mel frames, conditioned on text, a prompt mel and flow time.

    Keyword arguments and defaults are F5-TTS's, so its E2-TTS checkpoints load with ``strict=True``
    (``layers.{i}`` holds ``[skip_proj, attn_norm, attn, ff_norm, ff]``; ``skip_proj`` only in the
    second half with ``skip_connect_type="concat"``).

    Args:
        dim: Transformer width.
        depth: Number of blocks (even: half go down, half come back up).
        heads: Attention heads.
        dim_head: Width of each head.
        dropout: Dropout in attention output and feed-forward.
        ff_mult: Feed-forward expansion.
        mel_dim: Mel channels.
        text_num_embeds: Vocabulary size (one more embedding row is added for the filler token).
        text_dim: Text embedding width (``mel_dim`` when ``None``, as in E2-TTS).
        text_mask_padding: Zero filler/padding tokens around the ConvNeXt blocks.
        qk_norm: ``None`` or ``"rms_norm"``.
        conv_layers: ConvNeXt-V2 blocks refining the text embedding (E2-TTS: none).
        pe_attn_head: Apply rotary embedding to the first this many heads only.
        attn_backend: ``"torch"`` or ``"flash_attn"``.
        attn_mask_enabled: Mask padded keys in attention for batched inputs.
        skip_connect_type: ``"concat"`` (concatenate and project), ``"add"`` or ``"none"``.
        checkpoint_activations: Recompute each block in backward (training memory saver).
    """

    def __init__(
        self,
        *,
        dim: int,
        depth: int = 8,
        heads: int = 8,
        dim_head: int = 64,
        dropout: float = 0.1,
        ff_mult: float = 4,
        mel_dim: int = 100,
        text_num_embeds: int = 256,
        text_dim: int | None = None,
        text_mask_padding: bool = True,
        qk_norm: str | None = None,
        conv_layers: int = 0,
        pe_attn_head: int | None = None,
        attn_backend: str = "torch",
        attn_mask_enabled: bool = False,
        skip_connect_type: str = "concat",
        checkpoint_activations: bool = False,
    ):
        super().__init__()
        if depth < 2 or depth % 2:
            raise ValueError(f"depth must be even and at least 2 (half the blocks go down, half up), got {depth}")
        if skip_connect_type not in SKIP_CONNECT_TYPES:
            raise ValueError(f"skip_connect_type must be one of {SKIP_CONNECT_TYPES}, got {skip_connect_type!r}")
        text_dim = mel_dim if text_dim is None else text_dim
        self.dim = dim
        self.depth = depth
        self.mel_dim = mel_dim
        self.skip_connect_type = skip_connect_type
        self.time_embed = TimestepEmbedding(dim)
        self.text_embed = TextEmbedding(
            text_num_embeds, text_dim, mask_padding=text_mask_padding, conv_layers=conv_layers
        )
        self.input_embed = InputEmbedding(mel_dim, text_dim, dim)
        self.rotary_embed = RotaryEmbedding(dim_head)
        self.layers = nn.ModuleList()
        for index in range(depth):
            up = index >= depth // 2
            self.layers.append(
                nn.ModuleList(
                    [
                        nn.Linear(dim * 2, dim, bias=False) if up and skip_connect_type == "concat" else None,
                        ScaledRMSNorm(dim),
                        Attention(
                            dim,
                            heads=heads,
                            dim_head=dim_head,
                            dropout=dropout,
                            qk_norm=qk_norm,
                            pe_attn_head=pe_attn_head,
                            attn_backend=attn_backend,
                            attn_mask_enabled=attn_mask_enabled,
                        ),
                        ScaledRMSNorm(dim),
                        FeedForward(dim, mult=ff_mult, dropout=dropout, approximate="tanh"),
                    ]
                )
            )
        self.norm_out = ScaledRMSNorm(dim)
        self.proj_out = nn.Linear(dim, mel_dim)
        self.checkpoint_activations = checkpoint_activations

    def embed_text(
        self,
        text: torch.Tensor,
        seq_len: int,
        mask: torch.Tensor | None = None,
        drop_text: bool = False,
        independent: bool = False,
    ) -> torch.Tensor:
        """Frame-aligned text conditioning ``b n d``; depends on text and lengths only, not on time.

        F5-TTS's UNetT embeds every sample's text over the batch's full frame count; with
        ``independent`` (and a ``mask``) each sample uses its own length instead, as it would alone.
        """
        lengths = mask.sum(dim=1) if (independent and mask is not None) else seq_len
        return self.text_embed(text, seq_len=lengths, drop_text=drop_text, independent=independent)

    def clear_cache(self) -> None:
        """No-op kept for F5-TTS compatibility: this backbone never caches on the module."""

    def forward(
        self,
        x: torch.Tensor,
        cond: torch.Tensor,
        text: torch.Tensor | None,
        time: torch.Tensor,
        mask: torch.Tensor | None = None,
        drop_audio_cond: bool = False,
        drop_text: bool = False,
        cfg_infer: bool = False,
        cache: bool = False,
        *,
        text_embed: torch.Tensor | tuple[torch.Tensor, torch.Tensor] | None = None,
        isolate_batch: bool = False,
    ) -> torch.Tensor:
        """Predict the flow velocity; arguments as :meth:`flowtts.DiT.forward`.

        With ``cfg_infer`` the output is ``[cond; uncond]`` along the batch (``2b``). ``cache`` is
        accepted for F5-TTS compatibility and ignored (pass ``text_embed`` to reuse text conditioning).
        """
        del cache
        batch, seq_len = x.shape[:2]
        if time.ndim == 0:
            time = time.repeat(batch)
        t = self.time_embed(time)
        conv_mask = mask if isolate_batch else None  # upstream's UNetT does not mask its position convolution

        def embed(drop_audio: bool, drop_txt: bool, text_features: torch.Tensor | None) -> torch.Tensor:
            if text_features is None:
                text_features = self.embed_text(text, seq_len, mask, drop_text=drop_txt, independent=isolate_batch)
            return self.input_embed(x, cond, text_features, drop_audio_cond=drop_audio, audio_mask=conv_mask)

        if cfg_infer:
            cond_embed, uncond_embed = text_embed if text_embed is not None else (None, None)
            h = torch.cat((embed(False, False, cond_embed), embed(True, True, uncond_embed)), dim=0)
            t = torch.cat((t, t), dim=0)
            mask = torch.cat((mask, mask), dim=0) if mask is not None else None
        else:
            h = embed(drop_audio_cond, drop_text, text_embed)
        rope = self.rotary_embed.cos_sin(seq_len + 1, h.dtype)
        return self._trunk(h, t, mask, rope, True if isolate_batch else None)

    def condition(
        self,
        cond: torch.Tensor,
        text: torch.Tensor,
        mask: torch.Tensor | None = None,
        *,
        cfg_infer: bool = False,
        drop_audio_cond: bool = False,
        drop_text: bool = False,
        isolate_batch: bool = False,
    ) -> Conditioning:
        """Precompute everything of a sampling call that depends on neither ``x`` nor ``t``.

        The text embedding, the prompt-mel and text share of the input projection, the rotary tables
        (one position more, for the time token) and the fused attention projections; under autograd
        they are part of the graph. Arguments as :meth:`forward`.
        """
        inputs, mask = condition_inputs(
            self,
            cond,
            text,
            mask,
            cfg_infer=cfg_infer,
            drop_audio_cond=drop_audio_cond,
            drop_text=drop_text,
            isolate_batch=isolate_batch,
        )
        return Conditioning(
            inputs=inputs,
            mask=mask,
            rope=self.rotary_embed.cos_sin(cond.shape[1] + 1, inputs.dtype),
            qkv=[layer[2].fused_qkv() for layer in self.layers],
            branches=2 if cfg_infer else 1,
            attn_mask_enabled=True if isolate_batch else None,
        )

    def velocity(self, x: torch.Tensor, time: torch.Tensor, conditioning: Conditioning) -> torch.Tensor:
        """Velocity at ``(x, time)`` given a :meth:`condition` result; equals :meth:`forward`."""
        c = conditioning
        h, t = step_inputs(self, x, time, c)
        conv_mask = c.mask if c.attn_mask_enabled else None  # only isolated batches mask the convolution
        h = self.input_embed.conv_pos_embed(h, mask=conv_mask) + h
        return self._trunk(h, t, c.mask, c.rope, c.attn_mask_enabled, c.qkv)

    def _layer(self, index, h, skip, mask, rope, attn_mask_enabled, qkv_weight):
        skip_proj, attn_norm, attn, ff_norm, ff = self.layers[index]
        if skip is not None:
            h = skip_proj(torch.cat((h, skip), dim=-1)) if skip_proj is not None else h + skip
        h = attn(attn_norm(h), mask=mask, rope=rope, attn_mask_enabled=attn_mask_enabled, qkv_weight=qkv_weight) + h
        return ff(ff_norm(h)) + h

    def _trunk(self, h, t, mask, rope, attn_mask_enabled, qkv=None) -> torch.Tensor:
        h = torch.cat((t[:, None, :].to(h.dtype), h), dim=1)  # the time embedding leads as frame 0
        if mask is not None:
            mask = F.pad(mask, (1, 0), value=True)
        half = self.depth // 2
        skips = []
        for index in range(self.depth):
            skip = None
            if index < half:
                skips.append(h)
            elif self.skip_connect_type != "none":
                skip = skips.pop()
            args = (h, skip, mask, rope, attn_mask_enabled, qkv[index] if qkv is not None else None)
            if self.checkpoint_activations and torch.is_grad_enabled():
                h = checkpoint(self._layer, index, *args)
            else:
                h = self._layer(index, *args)
        return self.proj_out(self.norm_out(h)[:, 1:, :])
