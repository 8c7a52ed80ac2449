"""`train run --fsdp`: the model's parameters, gradients and optimiser state sharded over the
run's processes with PyTorch's FSDP2 (`fully_shard`), for towers that do not fit one device.

Why FSDP2 and not DeepSpeed ZeRO-3: it ships with torch (DeepSpeed is not a dependency),
keeps the model an ordinary nn.Module whose parameters are DTensors under their usual names
(so the optimiser's parameter groups, timm's Lamb and gradient clipping work unchanged), and
runs on gloo (CPU), where it is tested, as on nccl.

Units: each transformer block of every tower is one (its parameters are gathered for its
forward and backward only), and the strategy module holds the rest (embeddings, projections,
logit scale, the SLIP head): as FSDP's root it keeps them whole from its forward to its
backward, through which the model's encode_image may be called more than once (SLIP's views);
`gathered` holds them whole for evaluation, which calls encode_image/encode_text directly.
open_clip's logit scale is a 0-d parameter, which fully_shard refuses: it is made shape [1]
before sharding and saved 0-d again.

Checkpoints have one format whatever the wrapping: `full_states` gathers the full model
and optimiser state (a collective: every rank calls it) in the layout `state_dict()` of an
unsharded model and optimiser has, so a checkpoint of a sharded run resumes unsharded, at
another world size, or sharded again (`load_full_states`, which keeps each rank's shard).
On GPU the blocks compute in bf16 and reduce gradients in fp32 (MixedPrecisionPolicy)."""
from __future__ import annotations

import contextlib
from typing import Any, Callable, ContextManager, Iterator

import torch
import torch.nn as nn
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                     get_optimizer_state_dict, set_model_state_dict,
                                                     set_optimizer_state_dict)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor

from zoo.distributed import DistInfo

# Names of the ModuleLists that hold a tower's repeated blocks: open_clip's transformers
# (`resblocks`), timm's ViT/EVA trunks (`blocks`), Hugging Face encoders (`layer`).
BLOCK_LISTS = ("resblocks", "blocks", "layer")
# The optimiser state per parameter that has the parameter's shape (the rest, "step", is a count).
_MOMENT_SHAPED = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")

_GATHER = StateDictOptions(full_state_dict=True, cpu_offload=True)
_SCATTER = StateDictOptions(full_state_dict=True, strict=True)


def is_sharded(module: nn.Module) -> bool:
    """Whether `module` (the strategy module of a run) was sharded by `shard`."""
    return isinstance(module, FSDPModule)


def tower_blocks(model: nn.Module) -> list[nn.Module]:
    """The repeated blocks of every tower of `model`, each an FSDP unit (one all-gather each)."""
    return [block for name, sub in model.named_modules() if isinstance(sub, nn.ModuleList)
            and name.rsplit(".", 1)[-1] in BLOCK_LISTS for block in sub]


def scalar_parameters(module: nn.Module) -> set[str]:
    """Full names of `module`'s 0-d parameters (open_clip's logit_scale), before `shard`."""
    return {name for name, param in module.named_parameters() if param.ndim == 0}


def _scalars_to_1d(module: nn.Module) -> None:
    # fully_shard refuses 0-d parameters; ignored_params would leave the gradient unaveraged.
    for sub in module.modules():
        for name, param in list(sub.named_parameters(recurse=False)):
            if param.ndim == 0:
                setattr(sub, name, nn.Parameter(param.detach().reshape(1), requires_grad=param.requires_grad))


def shard(module: nn.Module, model: nn.Module, info: DistInfo) -> set[str]:
    """Shard `module` (the strategy module around the CLIP `model`) over the run's processes, in
    place; returns the names of the parameters made [1] from 0-d. Build the optimiser after this
    (the parameters become DTensors) and measure FLOPs before it."""
    scalars = scalar_parameters(module)
    _scalars_to_1d(module)
    mesh = init_device_mesh(info.device.type, (info.world_size,))
    # bf16 compute with fp32 gradient reduction on GPU (as the autocast of the unsharded path); fp32 on CPU.
    policy = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
              if info.device.type == "cuda" else MixedPrecisionPolicy())
    for block in tower_blocks(model):
        fully_shard(block, mesh=mesh, mp_policy=policy)
    fully_shard(module, mesh=mesh, mp_policy=policy)
    return scalars


def full_value(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor: a DTensor gathered (a collective: every rank calls it), others as they are."""
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


@contextlib.contextmanager
def gathered(module: nn.Module | None) -> Iterator[None]:
    """Within: the sharded `module`'s own parameters whole (its blocks gather theirs as they run),
    for calls that are not its forward (evaluation's encode_image/encode_text). A collective;
    nothing for None or a module that is not sharded."""
    if not isinstance(module, FSDPModule):
        yield
        return
    module.unshard()
    try:
        yield
    finally:
        module.reshard()


def gradient_sync_paused(net: nn.Module) -> Callable[[], ContextManager]:
    """The context that holds back the gradient reduction of `net` (accumulation's early passes):
    FSDP2's set_requires_gradient_sync, DDP's no_sync, nothing for a single process."""
    if isinstance(net, FSDPModule):
        return lambda: _no_gradient_sync(net)
    return getattr(net, "no_sync", contextlib.nullcontext)


@contextlib.contextmanager
def _no_gradient_sync(net: FSDPModule) -> Iterator[None]:
    net.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        net.set_requires_gradient_sync(True)


def full_states(module: nn.Module, optimizer: torch.optim.Optimizer | None, scalars: set[str],
                ) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, Any] | None]:
    """({child of the sharded `module`: its state_dict}, the optimizer's state_dict or None without
    one), whole and on CPU, in the layout an unsharded model and optimizer have (the 0-d parameters
    0-d again, the optimizer's state keyed by parameter index). A collective: every rank calls it;
    rank 0 gets the tensors, the others ({}, {})."""
    weights = get_model_state_dict(module, options=_GATHER)
    parts: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in weights.items():
        child, _, rest = key.partition(".")
        parts.setdefault(child, {})[rest] = value.reshape(()) if key in scalars else value
    if optimizer is None:
        return parts, None
    by_name = get_optimizer_state_dict(module, optimizer, options=_GATHER)
    if not by_name:  # not rank 0
        return parts, {}
    index = {name: i for i, name in enumerate(_names_in_order(by_name["param_groups"]))}
    state = {index[name]: _reshape_moments(value, ()) if name in scalars else value
             for name, value in by_name["state"].items()}
    groups = [dict(group, params=[index[name] for name in group["params"]]) for group in by_name["param_groups"]]
    return parts, {"state": dict(sorted(state.items())), "param_groups": groups}


def load_full_states(module: nn.Module, optimizer: torch.optim.Optimizer, parts: dict[str, dict[str, torch.Tensor]],
                     optimizer_state: dict[str, Any], scalars: set[str]) -> None:
    """Load what `full_states` returned (every rank holds it) into the sharded `module` and its
    optimizer, each rank keeping its shards. ValueError when the optimizer's groups differ."""
    weights = {f"{child}.{key}": value.reshape(1) if f"{child}.{key}" in scalars else value
               for child, part in parts.items() for key, value in part.items()}
    set_model_state_dict(module, weights, options=_SCATTER)
    params = {param: name for name, param in module.named_parameters()}
    names = [params[p] for group in optimizer.param_groups for p in group["params"]]
    sizes = [len(group["params"]) for group in optimizer.param_groups]
    if [len(group["params"]) for group in optimizer_state["param_groups"]] != sizes:  # as torch's load_state_dict
        raise ValueError("loaded state dict contains a parameter group that doesn't match the optimizer's")
    state = {names[i]: _reshape_moments(value, (1,)) if names[i] in scalars else value
             for i, value in optimizer_state["state"].items()}
    groups = [dict(group, params=[names[i] for i in group["params"]]) for group in optimizer_state["param_groups"]]
    set_optimizer_state_dict(module, optimizer, {"state": state, "param_groups": groups}, options=_SCATTER)


def _names_in_order(groups: list[dict[str, Any]]) -> list[str]:
    return [name for group in groups for name in group["params"]]


def _reshape_moments(state: dict[str, Any], shape: tuple[int, ...]) -> dict[str, Any]:
    return {k: v.reshape(shape) if k in _MOMENT_SHAPED and torch.is_tensor(v) else v for k, v in state.items()}
