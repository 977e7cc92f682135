"""Building blocks of the DiT backbone: rotary embedding, attention, AdaLN, feed-forward, ConvNeXt-V2.

Shapes: ``b`` batch, ``n`` frames, ``h`` heads, ``dh`` head dim, ``d`` model dim.

Parameter names follow F5-TTS so that its state dicts load unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RotaryEmbedding(nn.Module):
    """Interleaved rotary position embedding (pairs of adjacent channels rotate together).

    Holds the persistent ``inv_freq`` buffer that F5-TTS checkpoints contain.
    """

    def __init__(self, dim: int, base: float = 10000.0):
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2).float() / dim))
        self.register_buffer("inv_freq", inv_freq)

    def cos_sin(self, seq_len: int, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """``cos`` and ``sin`` tables of shape ``(n, dh)`` (float32, or float64 when asked)."""
        dtype = accurate_dtype(dtype)
        inv_freq = self.inv_freq.to(dtype)
        positions = torch.arange(seq_len, device=inv_freq.device, dtype=dtype)
        freqs = positions[:, None] * inv_freq[None, :]
        freqs = torch.stack((freqs, freqs), dim=-1).flatten(-2)
        return freqs.cos(), freqs.sin()


def _rotate_pairs(x: torch.Tensor) -> torch.Tensor:
    """``(x0, x1, x2, x3, ...) -> (-x1, x0, -x3, x2, ...)``."""
    pairs = x.unflatten(-1, (-1, 2))
    x_even, x_odd = pairs.unbind(-1)
    return torch.stack((-x_odd, x_even), dim=-1).flatten(-2)


def accurate_dtype(dtype: torch.dtype) -> torch.dtype:
    """Float32, or float64 for float64 inputs: the precision position and time features need."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` (``b h n dh``) by the tables of :meth:`RotaryEmbedding.cos_sin`, in at least float32."""
    xf = x.to(accurate_dtype(x.dtype))
    return (xf * cos + _rotate_pairs(xf) * sin).to(x.dtype)


class RMSNorm(nn.Module):
    """RMS normalisation over the last dimension (used for ``qk_norm="rms_norm"``)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.weight.dtype in (torch.float16, torch.bfloat16):
            x = x.to(self.weight.dtype)
        return F.rms_norm(x, (x.shape[-1],), weight=self.weight, eps=self.eps)


class Attention(nn.Module):
    """Multi-head self-attention through ``scaled_dot_product_attention``.

    Args:
        dim: Model width.
        heads: Number of heads.
        dim_head: Width of each head.
        dropout: Dropout after the output projection.
        qk_norm: ``None`` or ``"rms_norm"``.
        pe_attn_head: Apply the rotary embedding to the first this many heads only (all when ``None``).
        attn_backend: ``"torch"`` or ``"flash_attn"``.
        attn_mask_enabled: Mask padded keys in batched calls (otherwise padded frames are attended to,
            as in F5-TTS's default).
    """

    def __init__(
        self,
        dim: int,
        heads: int = 8,
        dim_head: int = 64,
        dropout: float = 0.0,
        qk_norm: str | None = None,
        pe_attn_head: int | None = None,
        attn_backend: str = "torch",
        attn_mask_enabled: bool = False,
    ):
        super().__init__()
        if attn_backend not in ("torch", "flash_attn"):
            raise ValueError(f"attn_backend must be 'torch' or 'flash_attn', got {attn_backend!r}")
        if attn_backend == "flash_attn":
            import importlib.util

            if importlib.util.find_spec("flash_attn") is None:
                raise ImportError(
                    "attn_backend='flash_attn' needs the flash-attn package (pip install flash-attn); "
                    "use attn_backend='torch' otherwise"
                )
        if qk_norm not in (None, "rms_norm"):
            raise ValueError(f"qk_norm must be None or 'rms_norm', got {qk_norm!r}")
        if pe_attn_head is not None and not 0 < pe_attn_head <= heads:
            raise ValueError(f"pe_attn_head must be None or in 1..heads={heads}, got {pe_attn_head}")
        self.heads = heads
        self.dim_head = dim_head
        self.pe_attn_head = pe_attn_head
        self.attn_backend = attn_backend
        self.attn_mask_enabled = attn_mask_enabled
        inner = heads * dim_head
        self.to_q = nn.Linear(dim, inner)
        self.to_k = nn.Linear(dim, inner)
        self.to_v = nn.Linear(dim, inner)
        self.q_norm = RMSNorm(dim_head) if qk_norm == "rms_norm" else None
        self.k_norm = RMSNorm(dim_head) if qk_norm == "rms_norm" else None
        self.to_out = nn.ModuleList([nn.Linear(inner, dim), nn.Dropout(dropout)])

    def fused_qkv(self) -> tuple[torch.Tensor, torch.Tensor] | nn.Module:
        """Query, key and value projections stacked into one weight and bias (differentiable); for a
        quantised model (:mod:`flowtts.model.quantize`) its stacked int8 layer ``to_qkv``."""
        fused = getattr(self, "to_qkv", None)
        if fused is not None:
            return fused
        weight = torch.cat((self.to_q.weight, self.to_k.weight, self.to_v.weight))
        bias = torch.cat((self.to_q.bias, self.to_k.bias, self.to_v.bias))
        return weight, bias

    def _rotate(self, t: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        if self.pe_attn_head is None:
            return apply_rotary(t, cos, sin)
        pn = self.pe_attn_head
        return torch.cat((apply_rotary(t[:, :pn], cos, sin), t[:, pn:]), dim=1)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        attn_mask_enabled: bool | None = None,
        qkv_weight: tuple[torch.Tensor, torch.Tensor] | nn.Module | None = None,
    ) -> torch.Tensor:
        """Attend over ``x`` (``b n d``).

        ``qkv_weight`` is an optional :meth:`fused_qkv` result: one matrix product instead of three
        (a sampler computes it once per call and reuses it at every step).
        """
        b, n, _ = x.shape
        if isinstance(qkv_weight, nn.Module):
            q, k, v = qkv_weight(x).chunk(3, dim=-1)
        elif qkv_weight is not None:
            q, k, v = F.linear(x, *qkv_weight).chunk(3, dim=-1)
        else:
            q, k, v = self.to_q(x), self.to_k(x), self.to_v(x)
        q = q.reshape(b, n, self.heads, self.dim_head).transpose(1, 2)
        k = k.reshape(b, n, self.heads, self.dim_head).transpose(1, 2)
        v = v.reshape(b, n, self.heads, self.dim_head).transpose(1, 2)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = self._rotate(q, *rope), self._rotate(k, *rope)

        use_mask = self.attn_mask_enabled if attn_mask_enabled is None else attn_mask_enabled
        key_mask = mask[:, None, None, :] if (use_mask and mask is not None) else None
        if self.attn_backend == "flash_attn":
            out = self._flash(q, k, v, key_mask)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask)
        out = out.transpose(1, 2).reshape(b, n, self.heads * self.dim_head).to(q.dtype)
        out = self.to_out[1](self.to_out[0](out))
        if mask is not None:
            out = out.masked_fill(~mask[..., None], 0.0)
        return out

    @staticmethod
    def _flash(q, k, v, key_mask):  # pragma: no cover - needs a GPU with flash-attn
        from flash_attn import flash_attn_func

        if key_mask is not None:
            # Variable-length packing is left to SDPA: exact and simple.
            return F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask)
        out = flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return out.transpose(1, 2)


class AdaLayerNorm(nn.Module):
    """LayerNorm modulated by the time embedding; returns the six DiT-block modulations."""

    def __init__(self, dim: int):
        super().__init__()
        self.silu = nn.SiLU()
        self.linear = nn.Linear(dim, dim * 6)
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)

    def forward(self, x: torch.Tensor, emb: torch.Tensor):
        emb = self.linear(self.silu(emb))
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = emb.chunk(6, dim=1)
        x = self.norm(x) * (1 + scale_msa[:, None]) + shift_msa[:, None]
        return x, gate_msa, shift_mlp, scale_mlp, gate_mlp


class AdaLayerNormFinal(nn.Module):
    """Final AdaLN before the output projection (scale first, then shift)."""

    def __init__(self, dim: int):
        super().__init__()
        self.silu = nn.SiLU()
        self.linear = nn.Linear(dim, dim * 2)
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        scale, shift = self.linear(self.silu(emb)).chunk(2, dim=1)
        return self.norm(x) * (1 + scale)[:, None, :] + shift[:, None, :]


class FeedForward(nn.Module):
    """Linear -> GELU -> dropout -> linear (keys ``ff.0.0``, ``ff.2``)."""

    def __init__(self, dim: int, mult: float = 4, dropout: float = 0.0, approximate: str = "none"):
        super().__init__()
        inner = int(dim * mult)
        self.ff = nn.Sequential(
            nn.Sequential(nn.Linear(dim, inner), nn.GELU(approximate=approximate)),
            nn.Dropout(dropout),
            nn.Linear(inner, dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ff(x)


class DiTBlock(nn.Module):
    """Pre-norm transformer block with AdaLN-zero style modulation."""

    def __init__(
        self,
        dim: int,
        heads: int,
        dim_head: int,
        ff_mult: float = 4,
        dropout: float = 0.1,
        qk_norm: str | None = None,
        pe_attn_head: int | None = None,
        attn_backend: str = "torch",
        attn_mask_enabled: bool = False,
    ):
        super().__init__()
        self.attn_norm = AdaLayerNorm(dim)
        self.attn = Attention(
            dim,
            heads=heads,
            dim_head=dim_head,
            dropout=dropout,
            qk_norm=qk_norm,
            pe_attn_head=pe_attn_head,
            attn_backend=attn_backend,
            attn_mask_enabled=attn_mask_enabled,
        )
        self.ff_norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.ff = FeedForward(dim, mult=ff_mult, dropout=dropout, approximate="tanh")

    def forward(self, x, t, mask=None, rope=None, attn_mask_enabled=None, qkv_weight=None):
        norm, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.attn_norm(x, t)
        attn = self.attn(norm, mask=mask, rope=rope, attn_mask_enabled=attn_mask_enabled, qkv_weight=qkv_weight)
        x = x + gate_msa[:, None] * attn
        norm = self.ff_norm(x) * (1 + scale_mlp[:, None]) + shift_mlp[:, None]
        return x + gate_mlp[:, None] * self.ff(norm)


class GRN(nn.Module):
    """Global response normalisation of ConvNeXt-V2 (the L2 norm runs over frames)."""

    def __init__(self, dim: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, 1, dim))
        self.beta = nn.Parameter(torch.zeros(1, 1, dim))

    def forward(self, x: torch.Tensor, frame_mask: torch.Tensor | None = None) -> torch.Tensor:
        # F5-TTS takes the norm over all frames, batch padding included; ``frame_mask`` restricts it
        # to each sample's own frames so that a batched sample equals the same sample alone.
        stats = x if frame_mask is None else x.masked_fill(~frame_mask[..., None], 0.0)
        gx = torch.norm(stats, p=2, dim=1, keepdim=True)
        nx = gx / (gx.mean(dim=-1, keepdim=True) + 1e-6)
        return self.gamma * (x * nx) + self.beta + x


class ConvNeXtV2Block(nn.Module):
    """Depthwise conv (k=7) -> LayerNorm -> MLP with GRN, residual; input ``b n d``."""

    def __init__(self, dim: int, intermediate_dim: int, dilation: int = 1):
        super().__init__()
        padding = (dilation * 6) // 2
        self.dwconv = nn.Conv1d(dim, dim, kernel_size=7, padding=padding, groups=dim, dilation=dilation)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, intermediate_dim)
        self.act = nn.GELU()
        self.grn = GRN(intermediate_dim)
        self.pwconv2 = nn.Linear(intermediate_dim, dim)

    def forward(self, x: torch.Tensor, frame_mask: torch.Tensor | None = None) -> torch.Tensor:
        h = self.dwconv(x.transpose(1, 2)).transpose(1, 2)
        h = self.pwconv2(self.grn(self.act(self.pwconv1(self.norm(h))), frame_mask))
        return x + h


class ConvPositionEmbedding(nn.Module):
    """Two grouped convolutions with Mish, zeroing padded frames between layers; input ``b n d``."""

    def __init__(self, dim: int, kernel_size: int = 31, groups: int = 16):
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.conv1d = nn.Sequential(
            nn.Conv1d(dim, dim, kernel_size, groups=groups, padding=kernel_size // 2),
            nn.Mish(),
            nn.Conv1d(dim, dim, kernel_size, groups=groups, padding=kernel_size // 2),
            nn.Mish(),
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x.transpose(1, 2)
        keep = mask[:, None, :] if mask is not None else None
        if keep is not None:
            x = x.masked_fill(~keep, 0.0)
        for layer in self.conv1d:
            x = layer(x)
            if keep is not None and isinstance(layer, nn.Conv1d):
                x = x.masked_fill(~keep, 0.0)
        # Contiguous frames-major output: the residual stream it is added to would otherwise inherit the
        # transposed layout, and every later add, norm and projection would run on (or copy) strided memory.
        return x.transpose(1, 2).contiguous()
