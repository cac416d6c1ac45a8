"""Variable-length attention over packed samples: a sample never attends to another.

Tokens of all visual inputs of a batch are packed into one sequence and
``cu_seqlens`` marks where each input starts (FlashAttention's convention).
On a GPU with ``flash-attn`` installed, ``flash_attn_varlen_func`` runs
directly on the packed tokens; elsewhere (CPU, or no flash-attn) SDPA runs
with a block-diagonal boolean mask built from the same offsets.

The LLM side packs text the same way (samples concatenated, offsets in
``cu_seqlens``) and runs causally within each sample: :func:`packed_causal_mask`
is its block-diagonal causal mask for SDPA/eager, and :func:`llm_attention`
picks the transformers implementation (``flash_attention_2`` takes the
offsets directly, no mask).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

IMPLEMENTATIONS = ("auto", "sdpa", "flash")


@functools.cache
def _flash_varlen():
    try:
        from flash_attn import flash_attn_varlen_func
    except ImportError:
        return None
    return flash_attn_varlen_func


def flash_available() -> bool:
    return torch.cuda.is_available() and _flash_varlen() is not None


def llm_attention(impl: str = "auto") -> str:
    """The transformers ``attn_implementation`` of the LLM for our ``auto | sdpa | flash`` choice.

    ``auto``: flash_attention_2 when CUDA and flash-attn are there (the packed path hands it the offsets), else
    SDPA (the packed path hands it a block-diagonal causal mask)."""
    if impl not in IMPLEMENTATIONS:
        raise ValueError(f"attention implementation {impl!r} is not one of {', '.join(IMPLEMENTATIONS)}")
    if impl == "flash":
        if _flash_varlen() is None:
            raise RuntimeError("attention 'flash' asked for, but flash-attn is not installed")
        return "flash_attention_2"
    return "flash_attention_2" if impl == "auto" and flash_available() else "sdpa"


def packed_causal_mask(cu_seqlens: torch.Tensor, total: int) -> torch.Tensor:
    """(total, total) bool, True where key k may be seen by query q: same packed sample and k <= q."""
    same = block_diagonal_mask(cu_seqlens, total)
    return same & torch.ones_like(same).tril()


def block_diagonal_mask(cu_seqlens: torch.Tensor, total: int) -> torch.Tensor:
    """(total, total) bool mask, True where query and key belong to the same packed input."""
    lengths = cu_seqlens[1:] - cu_seqlens[:-1]
    owner = torch.repeat_interleave(torch.arange(len(lengths), device=cu_seqlens.device), lengths)
    if owner.numel() != total:
        raise ValueError(f"cu_seqlens cover {owner.numel()} tokens, the packed sequence has {total}")
    return owner[:, None] == owner[None, :]


def varlen_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor, *, impl: str = "auto"
) -> torch.Tensor:
    """q, k, v: (L, heads, head_dim) packed; returns (L, heads, head_dim)."""
    if impl not in IMPLEMENTATIONS:
        raise ValueError(f"attention implementation {impl!r} is not one of {', '.join(IMPLEMENTATIONS)}")
    use_flash = impl == "flash" or (
        impl == "auto" and q.is_cuda and q.dtype in (torch.float16, torch.bfloat16) and _flash_varlen() is not None
    )
    if use_flash:
        fn = _flash_varlen()
        if fn is None:
            raise RuntimeError("attention 'flash' asked for, but flash-attn is not installed")
        cu = cu_seqlens.to(torch.int32)
        longest = int((cu[1:] - cu[:-1]).max())
        return fn(q, k, v, cu, cu, longest, longest)
    mask = block_diagonal_mask(cu_seqlens, q.shape[0])
    # SDPA wants (batch, heads, L, d): one "batch" holding every packed token.
    out = F.scaled_dot_product_attention(
        q.transpose(0, 1)[None], k.transpose(0, 1)[None], v.transpose(0, 1)[None], attn_mask=mask[None, None]
    )
    return out[0].transpose(0, 1)
