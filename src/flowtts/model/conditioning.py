"""What the velocity calls of one sampling run share, computed once per run (DiT and UNetT alike).

Both backbones start with the same input projection of ``[noisy mel | prompt mel | text]``; only the
noisy mel changes between solver steps, so the prompt and text share of that projection (text
embedding included) is computed once per call by :func:`condition_inputs` and each step adds the
noisy mel's share with :func:`step_inputs`. Nothing is kept on the module: the result lives in the
sampler's frame (and in the autograd graph when gradients are on).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class Conditioning:
    """What every velocity call of one sampling run shares (see :meth:`DiT.condition`).

    Attributes:
        inputs: Prompt-mel and text share of the input projection, bias included, ``(branches*b, n, dim)``.
        mask: Validity mask ``(branches*b, n)`` or ``None``.
        rope: Rotary ``cos``/``sin`` tables.
        qkv: Fused attention projection per block.
        branches: 2 when conditional and unconditional branches are packed (CFG), else 1.
        attn_mask_enabled: Attention-masking override (``True`` for isolated batches).
    """

    inputs: torch.Tensor
    mask: torch.Tensor | None
    rope: tuple[torch.Tensor, torch.Tensor]
    qkv: list[tuple[torch.Tensor, torch.Tensor] | torch.nn.Module]
    branches: int
    attn_mask_enabled: bool | None

    def branch(self, index: int) -> Conditioning:
        """The conditional (0) or unconditional (1) half of a CFG conditioning, as a one-branch one."""
        if self.branches != 2 or index not in (0, 1):
            raise ValueError(f"branch({index!r}) needs a two-branch (CFG) conditioning and an index of 0 or 1")
        b = self.inputs.shape[0] // 2
        rows = slice(index * b, (index + 1) * b)
        return dataclasses.replace(
            self,
            inputs=self.inputs[rows],
            mask=self.mask[rows] if self.mask is not None else None,
            branches=1,
        )


def condition_inputs(
    net, cond, text, mask, *, cfg_infer: bool, drop_audio_cond: bool, drop_text: bool, isolate_batch: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The prompt-mel and text share of ``net``'s input projection, bias included, and the matching mask.

    With ``cfg_infer`` the conditional and unconditional (no prompt, no text) branches are stacked
    along the batch, and so is the mask.
    """
    seq_len = cond.shape[1]
    weight, bias = net.input_embed.proj.weight, net.input_embed.proj.bias

    def branch(drop_audio: bool, drop_txt: bool) -> torch.Tensor:
        text_embed = net.embed_text(text, seq_len, mask, drop_text=drop_txt, independent=isolate_batch)
        if drop_audio:
            return F.linear(text_embed, weight[:, 2 * net.mel_dim :], bias)
        return F.linear(torch.cat((cond, text_embed), dim=-1), weight[:, net.mel_dim :], bias)

    if cfg_infer:
        inputs = torch.cat((branch(False, False), branch(True, True)), dim=0)
        mask = torch.cat((mask, mask), dim=0) if mask is not None else None
        return inputs, mask
    return branch(drop_audio_cond, drop_text), mask


def step_inputs(net, x: torch.Tensor, time: torch.Tensor, c: Conditioning) -> tuple[torch.Tensor, torch.Tensor]:
    """One step's input projection (the noisy mel's share plus ``c.inputs``) and time embedding."""
    if time.ndim == 0:
        time = time.repeat(x.shape[0])
    t = net.time_embed(time)
    h = F.linear(x, net.input_embed.proj.weight[:, : net.mel_dim])
    if c.branches == 2:
        h, t = torch.cat((h, h), dim=0), torch.cat((t, t), dim=0)
    return h + c.inputs, t
