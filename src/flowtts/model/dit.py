"""DiT backbone of F5-TTS: the velocity network of the flow.

Shapes: ``b`` batch, ``n`` frames, ``nt`` text tokens, ``d`` mel channels.

Unlike F5-TTS, the module keeps no text cache. A sampler computes what its steps share once with
:meth:`DiT.condition` and calls :meth:`DiT.velocity` at every step; the upstream-style ``forward``
also accepts a precomputed ``text_embed``. Everything cached therefore lives in the caller's frame
(thread-safe, ``deepcopy``-safe, and part of the autograd graph when gradients are on).
"""

from __future__ import annotations

import torch
from torch import nn

from flowtts.model.conditioning import Conditioning, condition_inputs, step_inputs
from flowtts.model.embeddings import InputEmbedding, TextEmbedding, TimestepEmbedding
from flowtts.model.modules import AdaLayerNormFinal, DiTBlock, RotaryEmbedding
from flowtts.sampling.checkpoint import checkpoint


class DiT(nn.Module):
    """Diffusion transformer over mel frames, conditioned on text, a prompt mel and flow time.

    Keyword arguments and defaults are F5-TTS's, so its checkpoints load with ``strict=True``.

    Args:
        dim: Transformer width.
        depth: Number of DiT blocks.
        heads: Attention heads.
        dim_head: Width of each head.
        dropout: Dropout in attention output and feed-forward.
        ff_mult: Feed-forward expansion.
        mel_dim: Mel channels.
        text_num_embeds: Vocabulary size (one more embedding row is added for the filler token).
        text_dim: Text embedding width (``mel_dim`` when ``None``).
        text_mask_padding: Zero filler/padding tokens around the ConvNeXt blocks.
        text_embedding_average_upsampling: Spread each token evenly over the frames (aligns early).
        qk_norm: ``None`` or ``"rms_norm"``.
        conv_layers: ConvNeXt-V2 blocks refining the text embedding.
        pe_attn_head: Apply rotary embedding to the first this many heads only.
        attn_backend: ``"torch"`` or ``"flash_attn"``.
        attn_mask_enabled: Mask padded keys in attention for batched inputs.
        long_skip_connection: Concatenate the input embedding to the last block's output.
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
        text_embedding_average_upsampling: bool = False,
        qk_norm: str | None = None,
        conv_layers: int = 0,
        pe_attn_head: int | None = None,
        attn_backend: str = "torch",
        attn_mask_enabled: bool = False,
        long_skip_connection: bool = False,
        checkpoint_activations: bool = False,
    ):
        super().__init__()
        text_dim = mel_dim if text_dim is None else text_dim
        self.dim = dim
        self.depth = depth
        self.mel_dim = mel_dim
        self.time_embed = TimestepEmbedding(dim)
        self.text_embed = TextEmbedding(
            text_num_embeds,
            text_dim,
            mask_padding=text_mask_padding,
            average_upsampling=text_embedding_average_upsampling,
            conv_layers=conv_layers,
        )
        self.input_embed = InputEmbedding(mel_dim, text_dim, dim)
        self.rotary_embed = RotaryEmbedding(dim_head)
        self.transformer_blocks = nn.ModuleList(
            [
                DiTBlock(
                    dim=dim,
                    heads=heads,
                    dim_head=dim_head,
                    ff_mult=ff_mult,
                    dropout=dropout,
                    qk_norm=qk_norm,
                    pe_attn_head=pe_attn_head,
                    attn_backend=attn_backend,
                    attn_mask_enabled=attn_mask_enabled,
                )
                for _ in range(depth)
            ]
        )
        self.long_skip_connection = nn.Linear(dim * 2, dim, bias=False) if long_skip_connection else None
        self.norm_out = AdaLayerNormFinal(dim)
        self.proj_out = nn.Linear(dim, mel_dim)
        self.checkpoint_activations = checkpoint_activations
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """Zero the AdaLN modulations and the output layers (the network starts as ``v = 0``)."""
        for block in self.transformer_blocks:
            nn.init.zeros_(block.attn_norm.linear.weight)
            nn.init.zeros_(block.attn_norm.linear.bias)
        nn.init.zeros_(self.norm_out.linear.weight)
        nn.init.zeros_(self.norm_out.linear.bias)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def embed_text(
        self,
        text: torch.Tensor,
        seq_len: int,
        mask: torch.Tensor | None = None,
        drop_text: bool = False,
        independent: bool = False,
    ) -> torch.Tensor:
        """Frame-aligned text conditioning ``b n d``; depends on text and lengths only, not on time.

        Args:
            text: Token ids ``b nt`` padded with ``-1``.
            seq_len: Number of frames ``n``.
            mask: Optional ``b n`` validity mask; each sample then uses its own length.
            drop_text: Embed the empty text (unconditional branch of classifier-free guidance).
            independent: Keep batch padding out of all statistics (see :class:`TextEmbedding`).
        """
        lengths = mask.sum(dim=1) if mask is not None else seq_len
        return self.text_embed(text, seq_len=lengths, drop_text=drop_text, independent=independent)

    def clear_cache(self) -> None:
        """No-op kept for F5-TTS compatibility: this DiT never caches on the module."""

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
        """Predict the flow velocity.

        Args:
            x: Noisy mel ``b n d``.
            cond: Prompt mel ``b n d`` (zeros where generated).
            text: Token ids ``b nt`` (may be ``None`` when ``text_embed`` is given).
            time: Flow time, scalar or ``b``.
            mask: Optional ``b n`` validity mask for batches of different lengths.
            drop_audio_cond: Zero the prompt mel (CFG training / unconditional branch).
            drop_text: Drop the text (CFG training / unconditional branch).
            cfg_infer: Run the conditional and unconditional branch packed in one batch of ``2b``;
                the output is ``[cond; uncond]`` along the batch.
            cache: Accepted for F5-TTS compatibility and ignored; reuse text conditioning by
                passing ``text_embed`` instead.
            text_embed: Precomputed :meth:`embed_text` output; with ``cfg_infer`` a pair
                ``(conditional, unconditional)``.
            isolate_batch: Compute every sample as if it were alone: padded frames are masked in
                attention and kept out of text statistics whatever ``attn_mask_enabled`` says
                (F5-TTS's batched numerics let padding leak in slightly).
        """
        del cache
        batch, seq_len = x.shape[:2]
        if time.ndim == 0:
            time = time.repeat(batch)
        t = self.time_embed(time)

        if cfg_infer:
            if text_embed is None:
                text_embed = (
                    self.embed_text(text, seq_len, mask, drop_text=False, independent=isolate_batch),
                    self.embed_text(text, seq_len, mask, drop_text=True, independent=isolate_batch),
                )
            cond_embed, uncond_embed = text_embed
            h = torch.cat(
                (
                    self.input_embed(x, cond, cond_embed, drop_audio_cond=False, audio_mask=mask),
                    self.input_embed(x, cond, uncond_embed, drop_audio_cond=True, audio_mask=mask),
                ),
                dim=0,
            )
            t = torch.cat((t, t), dim=0)
            mask = torch.cat((mask, mask), dim=0) if mask is not None else None
        else:
            if text_embed is None:
                text_embed = self.embed_text(text, seq_len, mask, drop_text=drop_text, independent=isolate_batch)
            h = self.input_embed(x, cond, text_embed, drop_audio_cond=drop_audio_cond, audio_mask=mask)
        rope = self.rotary_embed.cos_sin(seq_len, h.dtype)
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

        The text embedding (ConvNeXt included), the prompt-mel and text share of the input
        projection, the rotary tables and fused attention projections are computed once here and
        reused by :meth:`velocity` at every solver step. Under autograd they are part of the graph,
        so gradients reach their parameters exactly as if they were recomputed at every step.

        Args: as :meth:`forward`.
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
            rope=self.rotary_embed.cos_sin(cond.shape[1], inputs.dtype),
            qkv=[block.attn.fused_qkv() for block in self.transformer_blocks],
            branches=2 if cfg_infer else 1,
            attn_mask_enabled=True if isolate_batch else None,
        )

    def velocity(self, x: torch.Tensor, time: torch.Tensor, conditioning: Conditioning) -> torch.Tensor:
        """Velocity at ``(x, time)`` given a :meth:`condition` result; equals :meth:`forward`.

        With ``cfg_infer`` conditioning the output is ``[cond; uncond]`` along the batch (``2b``).
        """
        c = conditioning
        h, t = step_inputs(self, x, time, c)
        h = self.input_embed.conv_pos_embed(h, mask=c.mask) + h
        return self._trunk(h, t, c.mask, c.rope, c.attn_mask_enabled, c.qkv)

    def _trunk(self, h, t, mask, rope, attn_mask_enabled, qkv=None) -> torch.Tensor:
        residual = h
        for i, block in enumerate(self.transformer_blocks):
            qkv_weight = qkv[i] if qkv is not None else None
            if self.checkpoint_activations and torch.is_grad_enabled():
                h = checkpoint(block, h, t, mask, rope, attn_mask_enabled, qkv_weight)
            else:
                h = block(h, t, mask, rope, attn_mask_enabled, qkv_weight)
        if self.long_skip_connection is not None:
            h = self.long_skip_connection(torch.cat((h, residual), dim=-1))
        return self.proj_out(self.norm_out(h, t))
