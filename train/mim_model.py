"""EVA-02's masked image modelling: block-wise masks, patch tokens of an image tower, and
the module whose loss `train mim` minimises (the student's tokens at masked patches
regress the frozen teacher CLIP's patch features in its embedding space, by cosine).

Patch tokens are read from open_clip's own ViT and from timm towers with
`forward_features` (EVA, ViT); the student's masked patches are swapped for a learned
mask token right after its patch embedding (a forward hook, so timm's EVA forward with its
rotary embeddings runs unchanged)."""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Any, Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from clikit.errors import UserError
from zoo.models import image_size


class NoPatchTokens(UserError):
    """An image tower without a patch-token sequence (a CNN): it cannot be masked or regressed."""


def block_mask(batch: int, grid: tuple[int, int], ratio: float, min_block: int = 4,
               max_aspect: float = 1 / 0.3) -> torch.Tensor:
    """BEiT/EVA-02's block-wise masks: bool [batch, gh*gw], about `ratio` of each image's
    patches, as rectangles of at least `min_block` patches with aspect up to `max_aspect`.

    Every draw comes from torch's global RNG, so a checkpoint's RNG state replays the masks."""
    gh, gw = grid
    target = int(round(ratio * gh * gw))
    log_aspect = (math.log(1 / max_aspect), math.log(max_aspect))
    masks = torch.zeros(batch, gh, gw, dtype=torch.bool)
    for b in range(batch):
        mask, count = masks[b], 0
        while count < target:
            room, added = target - count, 0
            for _ in range(10):  # BEiT: up to 10 tries for a block that adds something
                u = torch.rand(5).tolist()
                area = min_block + u[0] * (room - min_block)
                aspect = math.exp(log_aspect[0] + u[1] * (log_aspect[1] - log_aspect[0]))
                h, w = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
                if 0 < h < gh and 0 < w < gw:
                    top, left = int(u[2] * (gh - h + 1)), int(u[3] * (gw - w + 1))
                    block = mask[top:top + h, left:left + w]
                    new = h * w - int(block.sum())
                    if 0 < new <= room:
                        block.fill_(True)
                        added = new
                        break
            if added == 0:
                break
            count += added
    return masks.view(batch, gh * gw)


def _patch_embed(visual: nn.Module) -> nn.Module:
    trunk = getattr(visual, "trunk", None)
    if trunk is not None and hasattr(trunk, "patch_embed") and hasattr(trunk, "forward_features"):
        return trunk.patch_embed
    if hasattr(visual, "conv1") and hasattr(visual, "transformer"):
        return visual.conv1
    raise NoPatchTokens(f"{type(getattr(visual, 'trunk', visual)).__name__} has no patch tokens")


def grid_of(visual: nn.Module) -> tuple[int, int]:
    """(rows, columns) of the tower's patch grid; NoPatchTokens for a CNN."""
    embed = _patch_embed(visual)
    if hasattr(embed, "grid_size"):
        return tuple(int(g) for g in embed.grid_size)  # type: ignore[return-value]
    side = int(visual.grid_size[0]), int(visual.grid_size[1])  # open_clip's ViT
    return side


def patch_tokens(visual: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The final layer's patch tokens [B, N, width] (class/register tokens removed), before
    pooling or projection (after timm's final norm; for open_clip's ViT after ln_post, as its
    pooling takes them, unless final_ln_after_pool or an attention pooler puts ln_post later)."""
    _patch_embed(visual)  # NoPatchTokens first
    trunk = getattr(visual, "trunk", None)
    if trunk is not None:
        return trunk.forward_features(images)[:, getattr(trunk, "num_prefix_tokens", 0):]
    # open_clip's public features API (3.3.0): the last block's tokens without the class token,
    # through ln_post where open_clip's own pooling takes its tokens after it.
    out = visual.forward_intermediates(images, indices=1, output_fmt="NLC", intermediates_only=True,
                                       normalize_intermediates=not visual.final_ln_after_pool
                                       and visual.attn_pool is None)
    return out["image_intermediates"][0]


def aligned_tokens(visual: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The patch tokens [B, N, embed_dim] taken through the tower's final norm and projection
    as its pooled token is: the teacher's language-aligned features, which EVA's MIM regresses
    (a CLIP ViT-B/16 teacher gives 512-d targets, its embedding size, not its width 768)."""
    tokens = patch_tokens(visual, images)
    trunk = getattr(visual, "trunk", None)
    if trunk is not None:  # open_clip's TimmModel: trunk.fc_norm and head, then its own head
        tokens = trunk.head(getattr(trunk, "fc_norm", nn.Identity())(tokens))
        return visual.head(tokens)
    if getattr(visual, "attn_pool", None) is not None:
        raise NoPatchTokens("an attention-pooled ViT does not project its patch tokens one by one; "
                            "pick a teacher with class-token or average pooling")
    # patch_tokens already took them through ln_post where the pooling does (a second
    # LayerNorm is invisible only while its weight is 1 and bias 0, i.e. untrained)
    return tokens @ visual.proj if visual.proj is not None else tokens


@contextmanager
def masked_patches(visual: nn.Module, mask: torch.Tensor, token: torch.Tensor) -> Iterator[None]:
    """Within the block, the tower's patch embedding outputs `token` at the patches `mask`
    marks (bool [B, N])."""
    embed = _patch_embed(visual)

    def swap(_module: nn.Module, _inputs: Any, out: torch.Tensor) -> torch.Tensor:
        if out.dim() == 4:  # open_clip's conv1: [B, C, gh, gw]
            m = mask.view(out.shape[0], 1, *out.shape[2:]).to(out.dtype)
            return out * (1 - m) + token.view(1, -1, 1, 1).to(out.dtype) * m
        m = mask.view(out.shape[0], -1, 1).to(out.dtype)
        return out * (1 - m) + token.view(1, 1, -1).to(out.dtype) * m

    handle = embed.register_forward_hook(swap)
    try:
        yield
    finally:
        handle.remove()


class MimHead(nn.Module):
    """What MIM trains beside the student tower: the mask token and the linear regressor
    from the student's width to the teacher's feature size (EVA-02's head)."""

    def __init__(self, width: int, teacher_dim: int) -> None:
        super().__init__()
        self.mask_token = nn.Parameter(torch.zeros(width))
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        self.regress = nn.Linear(width, teacher_dim)


class MimModule(nn.Module):
    """Student CLIP model (`model`: only its image tower trains), frozen teacher image tower
    and the MIM head. forward(images) -> (1 - cosine at masked patches, logs)."""

    def __init__(self, model: nn.Module, teacher: nn.Module, mean: tuple[float, ...], std: tuple[float, ...],
                 teacher_mean: tuple[float, ...], teacher_std: tuple[float, ...], teacher_size: int,
                 mask_ratio: float) -> None:
        super().__init__()
        self.model, self.teacher, self.mask_ratio, self.teacher_size = model, teacher, mask_ratio, teacher_size
        self.grid = grid_of(model.visual)
        for p in teacher.parameters():
            p.requires_grad_(False)
        teacher.eval()
        for name, p in model.named_parameters():  # only the image tower learns from MIM
            p.requires_grad_(name.startswith("visual."))
        for key, value in (("mean", mean), ("std", std), ("t_mean", teacher_mean), ("t_std", teacher_std)):
            self.register_buffer(key, torch.tensor(value).view(1, 3, 1, 1), persistent=False)
        width, t_dim = self._widths()
        self.mim_head = MimHead(width, t_dim)

    @torch.no_grad()
    def _widths(self) -> tuple[int, int]:
        """(student width, teacher feature size), checking that the patch grids match."""
        size = image_size(self.model)
        x = torch.zeros(1, 3, size, size)
        student = patch_tokens(self.model.visual, x)
        teacher = aligned_tokens(self.teacher, torch.zeros(1, 3, self.teacher_size, self.teacher_size))
        if teacher.shape[1] != student.shape[1]:
            t_side = math.isqrt(teacher.shape[1])
            raise UserError(f"the teacher's features do not fit the student: the teacher gives {t_side}x{t_side} "
                            f"patch features, the student has {self.grid[0]}x{self.grid[1]} patches; pick a "
                            "teacher and --model with the same patch grid (image size / patch size)")
        return int(student.shape[-1]), int(teacher.shape[-1])

    def forward(self, images: torch.Tensor, texts: Any = None) -> tuple[torch.Tensor, dict[str, Any]]:
        """Loss for uint8 (or 0..1 float) images; `texts` is ignored (MIM needs no captions)."""
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images
        mask = block_mask(x.shape[0], self.grid, self.mask_ratio).to(x.device)
        with torch.no_grad():
            t_in = (x - self.t_mean) / self.t_std
            if t_in.shape[-1] != self.teacher_size:
                t_in = F.interpolate(t_in, size=(self.teacher_size,) * 2, mode="bicubic", align_corners=False)
            target = aligned_tokens(self.teacher, t_in)
        with masked_patches(self.model.visual, mask, self.mim_head.mask_token):
            tokens = patch_tokens(self.model.visual, (x - self.mean) / self.std)
        pred = self.mim_head.regress(tokens[mask])
        loss = 1 - F.cosine_similarity(pred.float(), target[mask].float(), dim=-1).mean()
        return loss, {"mim_loss": loss.detach(), "masked": mask.float().mean()}
