"""A few training steps of the project's CLIP loss module on one fixed global batch, alone
or as one rank of torchrun (each rank takes its rows, DDP averages the gradients).

    python tests/ddp_step.py OUT.pt            # one process, the whole batch
    torchrun --nproc-per-node 2 tests/ddp_step.py OUT.pt
    torchrun ... tests/ddp_step.py OUT.pt K    # each rank's rows in K accumulated micro-batches

Rank 0 saves the loss of every step and the final weights to OUT.pt."""
from __future__ import annotations

import contextlib
import sys

import torch

GLOBAL_BATCH, STEPS, MODEL = 16, 3, "micro-vit-32"


def main(out: str, accum_steps: int = 1) -> None:
    import open_clip

    from train.accumulate import accumulated_backward
    from train.strategies import StrategyModule
    from zoo.distributed import init_distributed, shutdown
    from zoo.models import image_size, register_model_configs

    torch.set_num_threads(1)
    info = init_distributed("cpu")
    register_model_configs()
    torch.manual_seed(0)  # the same initial weights on every rank
    model = open_clip.create_model(MODEL, pretrained=None)
    size = image_size(model)
    module = StrategyModule(model, "clip", size, (0.5,) * 3, (0.25,) * 3, rank=info.rank, world_size=info.world_size)
    wrapped = torch.nn.parallel.DistributedDataParallel(module) if info.enabled else module
    # SGD, not Adam: Adam divides by the gradient's size, so a gradient that is zero in exact
    # arithmetic (the attention key bias) but 1e-10 of rounding noise becomes a full step.
    optimizer = torch.optim.SGD(module.parameters(), lr=0.5)
    data = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (STEPS, GLOBAL_BATCH, 3, size, size), dtype=torch.uint8, generator=data)
    context = open_clip.get_model_config(MODEL)["text_cfg"]["context_length"]
    texts = torch.randint(1, 1000, (STEPS, GLOBAL_BATCH, context), generator=data)
    rows = slice(info.rank * GLOBAL_BATCH // info.world_size, (info.rank + 1) * GLOBAL_BATCH // info.world_size)
    losses = []
    for step in range(STEPS):
        optimizer.zero_grad()
        if accum_steps > 1:
            loss = accumulated_backward(lambda im, tx: wrapped(im, tx, features_only=True), module.clip_loss,
                                        images[step, rows], texts[step, rows], accum_steps, info.device,
                                        no_sync=getattr(wrapped, "no_sync", contextlib.nullcontext))
        else:
            loss, _ = wrapped(images[step, rows], texts[step, rows])
            loss.backward()
        optimizer.step()
        # each rank's loss covers its own rows: their mean is the global batch's loss
        total = loss.detach().clone()
        if info.enabled:
            torch.distributed.all_reduce(total)
        losses.append(float(total) / info.world_size)
    if info.is_main:
        torch.save({"losses": losses, "state_dict": module.model.state_dict()}, out)
    shutdown(info)


if __name__ == "__main__":
    main(sys.argv[1], *map(int, sys.argv[2:]))
