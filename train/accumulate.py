"""Gradient accumulation for the contrastive loss (`train run --accum-steps K`), open_clip's
way (open_clip_train --accum-freq): the loss is the one over the whole batch, not K small ones.

Pass 1 runs every micro-batch without gradient and keeps its features. Pass 2 reruns micro-batch
j with gradient, takes the loss over the kept features with j's replaced by the fresh ones and
backpropagates: each pass-2 loss is the whole batch's loss, so the K backward passes sum to its
gradient for everything upstream of the features. Two fixes over open_clip:

- the temperature feeds the loss directly in every pass, so its gradient would be counted K
  times (measured: x4.0000 at K=4); it carries gradient only in the last pass here;
- patch dropout, dropout and batch augmentation would draw differently in the two passes
  (gradient error ~100%); each micro-batch runs both passes on its own seed, drawn from the
  global RNG (which checkpoints hold, so a resumed run draws the same seeds).

Under DDP the gradients are all-reduced once, in the last pass (no_sync on the others).
BatchNorm over micro-batches is not BatchNorm over the batch: refused (`check_batch_statistics`)."""
from __future__ import annotations

import contextlib
from typing import Callable, ContextManager, Iterator

import torch
import torch.nn as nn

from clikit.errors import UserError

_SEED_RANGE = 2**62


@contextlib.contextmanager
def replayed_rng(seed: int, device: torch.device) -> Iterator[None]:
    """Run the block on a private RNG stream seeded by `seed`; the global stream is left as it was."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


def draw_seeds(count: int) -> list[int]:
    """One seed per micro-batch, from the global RNG (so resuming from a checkpoint replays them)."""
    return [int(s) for s in torch.randint(0, _SEED_RANGE, (count,))]


Features = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def accumulated_backward(features: Features, loss_fn: nn.Module, images: torch.Tensor, texts: torch.Tensor,
                         steps: int, device: torch.device,
                         no_sync: Callable[[], ContextManager] = contextlib.nullcontext) -> torch.Tensor:
    """Backpropagate the contrastive loss of (images, texts) in `steps` micro-batches; returns that
    loss (detached). `features(images, texts)` is the model's forward up to (image features, text
    features, logit scale); `no_sync` the context that holds back DDP's gradient all-reduce."""
    seeds = draw_seeds(steps)
    chunks = list(zip(images.chunk(steps), texts.chunk(steps)))
    with torch.no_grad():
        cached = []
        for (im, tx), seed in zip(chunks, seeds):
            with replayed_rng(seed, device):
                cached.append(features(im, tx))
    image_cache, text_cache = [c[0] for c in cached], [c[1] for c in cached]
    for j, ((im, tx), seed) in enumerate(zip(chunks, seeds)):
        last = j == steps - 1
        with contextlib.nullcontext() if last else no_sync():
            with replayed_rng(seed, device):
                image_f, text_f, scale = features(im, tx)
            if not last:
                scale = scale.detach()  # its gradient counts once, in the last pass
            loss = loss_fn(torch.cat(image_cache[:j] + [image_f] + image_cache[j + 1:]),
                           torch.cat(text_cache[:j] + [text_f] + text_cache[j + 1:]), scale)
            loss.backward()
    return loss.detach()


def check_batch_statistics(module: nn.Module, model_name: str) -> None:
    """UserError when a BatchNorm of `module` would train on batch statistics (it is in training
    mode: a tower that is not locked), since micro-batch statistics are not the batch's."""
    norms = [name for name, m in module.named_modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
    if norms:
        raise UserError(f"--accum-steps needs towers without BatchNorm in training ({model_name} has {norms[0]}, "
                        "whose statistics would come from micro-batches); lock that tower or use --accum-steps 1")
