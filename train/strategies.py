"""Training strategies: clip, flip, clip-aug, slip. A `Strategy` record, looked up by name
(`strategy(name)`), carries what each one does; callers ask its fields, never its name.
One module runs a strategy's whole forward (augmentation, towers, losses) so DDP, FLOP
counting and the loop treat every strategy alike, and each strategy's real extra cost lands
in the measured FLOPs."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from clikit.errors import UserError

def patch_dropout_modules(model: nn.Module) -> list[nn.Module]:
    """open_clip's and timm's PatchDropout modules inside a model (FLIP's token drop).

    timm's EVA towers use PatchDropoutWithIndices (it also returns the kept indices, which
    EVA needs to drop the same tokens' rotary embeddings); it is no PatchDropout subclass."""
    from open_clip.transformer import PatchDropout as OpenClipPatchDropout
    from timm.layers import PatchDropout as TimmPatchDropout
    from timm.layers import PatchDropoutWithIndices

    kinds = (OpenClipPatchDropout, TimmPatchDropout, PatchDropoutWithIndices)
    return [m for m in model.modules() if isinstance(m, kinds)]


def set_patch_drop(model: nn.Module, prob: float) -> None:
    """Set the fraction of image patches every PatchDropout in model drops (training only)."""
    for module in patch_dropout_modules(model):
        module.prob = prob


def clip_augment(image_size: int) -> nn.Module:
    """CLIP + data augmentation: a RandAugment-style stack run on the batch (kornia)."""
    import kornia.augmentation as K
    from kornia.augmentation.auto import RandAugment

    return nn.Sequential(
        K.RandomResizedCrop((image_size, image_size), scale=(0.5, 1.0)),
        K.RandomHorizontalFlip(),
        RandAugment(n=2, m=9),
    )


def simclr_augment(image_size: int) -> nn.Module:
    """SimCLR's view augmentation (crop, flip, colour jitter, grey, blur) on the batch."""
    import kornia.augmentation as K

    return nn.Sequential(
        K.RandomResizedCrop((image_size, image_size), scale=(0.08, 1.0)),
        K.RandomHorizontalFlip(),
        K.ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8),
        K.RandomGrayscale(p=0.2),
        K.RandomGaussianBlur((3, 3), (0.1, 2.0), p=0.5),
    )


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """SimCLR's normalised-temperature cross entropy between two views of the same batch."""
    z = F.normalize(torch.cat([z1, z2]), dim=-1)
    n = z1.shape[0]
    logits = z @ z.t() / temperature
    logits.fill_diagonal_(float("-inf"))
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(logits, targets)


@dataclass(frozen=True)
class Strategy:
    """What a strategy changes in a CLIP step. Stored by `name` (config.yaml, --strategy)."""

    name: str
    # The command that trains it: `train run --strategy NAME`, or `train mim` (whose
    # config.yaml says strategy: mim; its MimModule masks patches itself).
    command: str = "run"
    # A CLIP loss, contrasting the samples of a batch (so 2 at least) at a learned temperature.
    contrastive: bool = True
    # FLIP: the image tower drops `patch_drop` of its patches, and the last `unmasked_fraction`
    # of the steps run unmasked (a step of each kind has its own measured cost).
    drops_patches: bool = False
    # Augmentation of the batch before the CLIP loss (image size -> module), or None.
    augmentation: Callable[[int], nn.Module] | None = None
    # SLIP: a SimCLR loss on two views made by this (image size -> module), through a
    # projector head trained beside the model (saved in checkpoints as "slip_head").
    ssl_views: Callable[[int], nn.Module] | None = None
    # `--accum-steps` > 1 can split its loss into micro-batches (train.accumulate): a contrastive
    # loss over features only (SLIP's head normalises over the batch; MIM is no contrastive loss).
    accumulates: bool = True

    def patch_drop(self, requested: float) -> float:
        """The fraction of patches dropped in a masked step: the requested one, or none."""
        return requested if self.drops_patches else 0.0

    def unmasked_fraction(self, requested: float) -> float:
        """The fraction of steps that run unmasked at the end (0 for a strategy that never masks)."""
        return requested if self.drops_patches else 0.0


# Every strategy there is, by name (a new one is a record here; nothing else names strategies).
REGISTRY: dict[str, Strategy] = {s.name: s for s in (
    Strategy("clip"),
    Strategy("flip", drops_patches=True),
    Strategy("clip-aug", augmentation=clip_augment),
    Strategy("slip", ssl_views=simclr_augment, accumulates=False),
    Strategy("mim", command="mim", contrastive=False, accumulates=False),
)}
STRATEGIES = tuple(name for name, s in REGISTRY.items() if s.command == "run")  # `train run --strategy`


def strategy(name: str, command: str | None = None) -> Strategy:
    """The record named `name`, among those `command` trains when given; UserError (naming
    that command's strategies) for any other name."""
    found = REGISTRY.get(name)
    if found is None or command not in (None, found.command):
        choices = [s.name for s in REGISTRY.values() if s.command == (command or "run")]
        raise UserError(f"unknown strategy {name!r}; choose one of: {', '.join(choices)}")
    return found


def check_strategy(name: str) -> None:
    """UserError unless name is one of STRATEGIES (what `train run --strategy` takes)."""
    strategy(name, "run")


class StrategyModule(nn.Module):
    """The CLIP model plus whatever a strategy adds (augmenters, SLIP's SimCLR head)."""

    def __init__(
        self,
        model: nn.Module,
        name: str,
        image_size: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        rank: int = 0,
        world_size: int = 1,
        slip_scale: float = 1.0,
    ):
        super().__init__()
        from open_clip.loss import ClipLoss

        self.strategy = strategy(name)
        self.model = model
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        # Global-batch contrastive loss: gather features with gradient, each rank scores its rows.
        self.clip_loss = ClipLoss(local_loss=world_size > 1, gather_with_grad=world_size > 1,
                                  cache_labels=True, rank=rank, world_size=world_size)
        augmentation, ssl_views = self.strategy.augmentation, self.strategy.ssl_views
        self.augment = augmentation(image_size) if augmentation is not None else None
        self.slip_scale = slip_scale
        if ssl_views is not None:
            dim = _embed_dim(model)
            self.views = ssl_views(image_size)
            self.slip_head = nn.Sequential(  # SLIP's 3-layer MLP projector, smaller
                nn.Linear(dim, 4 * dim), nn.BatchNorm1d(4 * dim), nn.ReLU(inplace=True),
                nn.Linear(4 * dim, 4 * dim), nn.BatchNorm1d(4 * dim), nn.ReLU(inplace=True),
                nn.Linear(4 * dim, dim),
            )
        else:
            self.views = None
            self.slip_head = None

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.mean) / self.std

    def forward(self, images: torch.Tensor, texts: torch.Tensor, features_only: bool = False) -> tuple[Any, ...]:
        """(loss, {"clip_loss", "ssl_loss" with slip}) for uint8 (or 0..1 float) images and token ids;
        with features_only, (image features, text features, logit scale) before the loss
        (train.accumulate; through DDP's forward, so that its gradient sync is prepared)."""
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images
        if self.augment is not None:
            x = self.augment(x)
        image_features, text_features, logit_scale = self._clip_forward(self.normalize(x), texts)
        if features_only:
            return image_features, text_features, logit_scale
        loss = self.clip_loss(image_features, text_features, logit_scale)
        logs: dict[str, Any] = {"clip_loss": loss.detach()}
        if self.slip_head is not None:
            v1 = self.model.encode_image(self.normalize(self.views(x)))
            v2 = self.model.encode_image(self.normalize(self.views(x)))
            ssl = nt_xent(self.slip_head(v1), self.slip_head(v2))
            logs["ssl_loss"] = ssl.detach()
            loss = loss + self.slip_scale * ssl
        return loss, logs

    def _clip_forward(self, images: torch.Tensor, texts: torch.Tensor):
        out = self.model(images, texts)
        if isinstance(out, dict):
            return out["image_features"], out["text_features"], out["logit_scale"]
        return out[0], out[1], out[2]


def _embed_dim(model: nn.Module) -> int:
    with torch.no_grad():
        proj = getattr(model, "text_projection", None)
        if isinstance(proj, torch.Tensor):
            return int(proj.shape[1])
        if isinstance(proj, nn.Linear):
            return int(proj.out_features)
        text = getattr(model, "text", None)
        if text is not None and getattr(text, "output_dim", None):
            return int(text.output_dim)
    raise UserError("cannot find the model's embedding size for the SLIP head")
