"""FlashAttention for the EVA/ViT towers on GPU, PyTorch's SDPA everywhere else.

timm's EVA and ViT attention call `torch.nn.functional.scaled_dot_product_attention` on
(batch, heads, tokens, head_dim) tensors. `use_flash_attention(device)` routes those calls
to flash-attn's `flash_attn_func` while it is active, when flash-attn is installed, the
device is CUDA and the call is one flash-attn computes (fp16/bf16, no explicit mask);
any other call, and every call on CPU, goes to SDPA unchanged. flash-attn wants
(batch, tokens, heads, head_dim): `flash_layout_call` does that transpose and back, and is
tested on CPU with SDPA standing in for the kernel (tests/test_attention.py)."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import torch
import torch.nn.functional as F

_SDPA = F.scaled_dot_product_attention  # the original, whatever is patched in later


def flash_attn_func() -> Callable | None:
    """flash-attn's kernel when the package is installed (it has no CPU build), else None."""
    try:
        from flash_attn import flash_attn_func as kernel  # type: ignore[import-not-found]
    except ImportError:
        return None
    return kernel


def flash_layout_call(kernel: Callable, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float = 0.0,
                      is_causal: bool = False, scale: float | None = None) -> torch.Tensor:
    """SDPA's semantics on (B, H, N, D) tensors through a kernel that takes and returns
    (B, N, H, D) with flash-attn's keywords (dropout_p, softmax_scale, causal)."""
    out = kernel(q.transpose(1, 2).contiguous(), k.transpose(1, 2).contiguous(), v.transpose(1, 2).contiguous(),
                 dropout_p=dropout_p, softmax_scale=scale, causal=is_causal)
    return out.transpose(1, 2)


def sdpa_as_flash_kernel(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float = 0.0,
                         softmax_scale: float | None = None, causal: bool = False) -> torch.Tensor:
    """A stand-in with flash-attn's signature and layout, computed by SDPA (for tests)."""
    out = _SDPA(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), dropout_p=dropout_p, is_causal=causal,
                scale=softmax_scale)
    return out.transpose(1, 2)


def _dispatcher(kernel: Callable, dtypes: tuple[torch.dtype, ...]) -> Callable:
    def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None = None,
                  dropout_p: float = 0.0, is_causal: bool = False, scale: float | None = None, **kw) -> torch.Tensor:
        if attn_mask is None and not kw and q.dtype in dtypes and q.dim() == 4 and q.shape[-1] <= 256:
            return flash_layout_call(kernel, q, k, v, dropout_p, is_causal, scale)
        return _SDPA(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale, **kw)

    return attention


@contextmanager
def use_flash_attention(device: torch.device, kernel: Callable | None = None,
                        dtypes: tuple[torch.dtype, ...] = (torch.float16, torch.bfloat16)) -> Iterator[bool]:
    """While active, SDPA calls that flash-attn can compute go to `kernel` (default: flash-attn
    on a CUDA device when installed). Yields whether the flash path is on; a no-op otherwise."""
    if kernel is None and device.type == "cuda":
        kernel = flash_attn_func()
    if kernel is None:
        yield False
        return
    F.scaled_dot_product_attention = _dispatcher(kernel, dtypes)
    try:
        yield True
    finally:
        F.scaled_dot_product_attention = _SDPA
