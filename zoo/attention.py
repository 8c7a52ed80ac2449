"""FlashAttention for one model's attention modules on GPU, PyTorch's SDPA everywhere else.

timm's attention modules (EVA's and ViT's, which carry `fused_attn`) and open_clip's own
`Attention` call `torch.nn.functional.scaled_dot_product_attention` on (batch, heads,
tokens, head_dim) tensors. `use_flash_attention(model, device)` gives each such module of
`model` a forward hook pair that holds a `TorchFunctionMode` (PyTorch's public way to
intercept torch calls within a scope) for that module's forward only: its SDPA calls that
flash-attn computes (fp16/bf16, no explicit mask, head_dim <= 256) go to flash-attn's
`flash_attn_func` when flash-attn is installed and the device is CUDA; any other call, every
call on CPU, other models and `F.scaled_dot_product_attention` itself are untouched.
torch's `nn.MultiheadAttention` (open_clip's ViT blocks) computes SDPA inside
`F.multi_head_attention_forward`, where no mode of the module's reaches, so it stays on
PyTorch's SDPA (which has its own flash backend on CUDA).

flash-attn wants (batch, tokens, heads, head_dim): `flash_layout_call` does that transpose
and back, and is tested on CPU with SDPA standing in for the kernel (tests/test_eva_parts.py)."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils.hooks import RemovableHandle

FLASH_DTYPES = (torch.float16, torch.bfloat16)


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
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                         dropout_p=dropout_p, is_causal=causal, scale=softmax_scale)
    return out.transpose(1, 2)


def _dispatcher(kernel: Callable, dtypes: tuple[torch.dtype, ...]) -> Callable:
    def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None = None,
                  dropout_p: float = 0.0, is_causal: bool = False, scale: float | None = None, **kw) -> torch.Tensor:
        if attn_mask is None and not kw and q.dtype in dtypes and q.dim() == 4 and q.shape[-1] <= 256:
            return flash_layout_call(kernel, q, k, v, dropout_p, is_causal, scale)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal,
                                              scale=scale, **kw)

    return attention


class _RouteAttention(TorchFunctionMode):
    """Within one module's forward: SDPA calls go to `attention`, every other call runs as made."""

    def __init__(self, attention: Callable) -> None:
        super().__init__()
        self.attention = attention

    def __torch_function__(self, func, types, args=(), kwargs=None):
        # The mode is off while this runs, so neither call below comes back here.
        if func is F.scaled_dot_product_attention:
            return self.attention(*args, **(kwargs or {}))
        return func(*args, **(kwargs or {}))


def attention_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The modules of `model` whose own forward calls F.scaled_dot_product_attention: timm's
    (they carry `fused_attn`) and open_clip's `Attention` (it carries `use_fsdpa`)."""
    return [m for m in model.modules() if hasattr(m, "fused_attn") or hasattr(m, "use_fsdpa")]


def route_attention(model: torch.nn.Module, attention: Callable) -> list[RemovableHandle]:
    """Hook `attention` into each attention module of `model`; remove the returned handles to undo."""
    route = _RouteAttention(attention)

    def enter(module: torch.nn.Module, args: Any) -> None:
        route.__enter__()

    def leave(module: torch.nn.Module, args: Any, output: Any) -> None:
        route.__exit__(None, None, None)

    handles = []
    for module in attention_modules(model):
        handles.append(module.register_forward_pre_hook(enter))
        handles.append(module.register_forward_hook(leave, always_call=True))  # also when forward raises
    return handles


@contextmanager
def use_flash_attention(model: torch.nn.Module, device: torch.device, kernel: Callable | None = None,
                        dtypes: tuple[torch.dtype, ...] = FLASH_DTYPES) -> Iterator[bool]:
    """While active, the SDPA calls of `model`'s attention modules that flash-attn can compute go
    to `kernel` (default: flash-attn on a CUDA device when installed). Yields whether the flash
    path is on; a no-op otherwise."""
    if kernel is None and device.type == "cuda":
        kernel = flash_attn_func()
    if kernel is None:
        yield False
        return
    handles = route_attention(model, _dispatcher(kernel, dtypes))
    try:
        yield True
    finally:
        for handle in handles:
            handle.remove()
