"""EVA-CLIP's recipe, part by part on real towers: block-wise masks, the MIM loss module
and its one-line refusals, layer-wise lr decay groups, FLIP's patch drop on timm's EVA
tower, and the attention paths (SDPA, an explicit softmax reference, the flash layout, routed per model)."""
from __future__ import annotations

import pytest
import torch

from clikit.errors import UserError


def _model(name: str, **kw):
    from zoo.models import create_model

    torch.manual_seed(0)
    return create_model(name, **kw)[0]


def test_block_masks_cover_about_40_percent_in_blocks_and_replay_from_the_rng():
    from train.mim_model import block_mask

    torch.manual_seed(3)
    masks = block_mask(32, (8, 8), 0.4)
    assert masks.shape == (32, 64) and masks.dtype == torch.bool
    frac = masks.float().mean(1)
    assert ((frac > 0.3) & (frac <= 26 / 64 + 1e-6)).all()  # never above the target of 26 patches
    grid = masks.view(32, 8, 8).float()
    # Blocks, not scattered patches: most masked patches have a masked neighbour.
    right = (grid[:, :, :-1] * grid[:, :, 1:]).sum() + (grid[:, :-1, :] * grid[:, 1:, :]).sum()
    assert right / grid.sum() > 0.8
    torch.manual_seed(3)
    assert torch.equal(block_mask(32, (8, 8), 0.4), masks)


def test_mim_module_regresses_the_teacher_and_refuses_misfits():
    from train.mim_model import MimModule, NoPatchTokens, patch_tokens

    norm = (0.5,) * 3
    student, teacher = _model("tiny-eva02-32"), _model("tiny-vit-32")
    module = MimModule(student, teacher.visual, norm, norm, norm, norm, 32, 0.4)
    assert [n for n, p in module.named_parameters() if p.requires_grad and not n.startswith("model.visual.")] == [
        "mim_head.mask_token", "mim_head.regress.weight", "mim_head.regress.bias"]  # teacher and text frozen
    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    loss, logs = module(x)
    loss.backward()
    assert 0 < float(loss.detach()) < 2 and 0.3 < float(logs["masked"]) <= 0.41
    assert student.visual.trunk.patch_embed.proj.weight.grad is not None
    assert all(p.grad is None for p in teacher.parameters())
    assert patch_tokens(teacher.visual, torch.zeros(1, 3, 32, 32)).shape == (1, 64, 128)

    with pytest.raises(UserError, match="do not fit the student: the teacher gives 4x4"):
        MimModule(_model("tiny-eva02-32"), _model("micro-vit-32").visual, norm, norm, norm, norm, 32, 0.4)
    with pytest.raises(NoPatchTokens, match="no patch tokens"):
        MimModule(_model("tiny-resnet-32"), teacher.visual, norm, norm, norm, norm, 32, 0.4)


@pytest.mark.parametrize("name, first, last", [
    ("tiny-eva02-32", "model.visual.trunk.patch_embed.proj.weight", "model.visual.trunk.head.weight"),
    ("tiny-vit-32", "model.visual.conv1.weight", "model.visual.proj"),
])
def test_layer_decay_scales_the_image_tower_lr_by_depth(name, first, last):
    from train.optim import make_optimizer, param_groups, visual_layer_ids
    from train.strategies import StrategyModule

    module = StrategyModule(_model(name), "clip", 32, (0.5,) * 3, (0.25,) * 3)
    ids, layers = visual_layer_ids(module)
    groups = param_groups(module, lr=1e-3, weight_decay=0.1, layer_decay=0.5)
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    params = dict(module.named_parameters())
    assert lr_of[id(params[first])] == pytest.approx(1e-3 * 0.5 ** (layers - 1))  # embeddings: slowest
    assert lr_of[id(params[last])] == pytest.approx(1e-3)  # head: full lr
    block1 = next(n for n in params if ".blocks.1." in n or ".resblocks.1." in n)
    assert lr_of[id(params[block1])] == pytest.approx(1e-3 * 0.5 ** (layers - 1 - ids[block1]))
    text = next(n for n in params if "token_embedding" in n)
    assert lr_of[id(params[text])] == pytest.approx(1e-3)  # the text tower is untouched
    assert sum(len(g["params"]) for g in groups) == len(params)
    plain = param_groups(module, lr=1e-3, weight_decay=0.1)
    assert {g["lr"] for g in plain} == {1e-3}
    assert len(make_optimizer(module, "lamb", 1e-3, 0.1, layer_decay=0.75).param_groups) == len(groups)

    resnet = StrategyModule(_model("tiny-resnet-32"), "clip", 32, (0.5,) * 3, (0.25,) * 3)
    with pytest.raises(UserError, match="--layer-decay applies to ViT/EVA"):
        param_groups(resnet, lr=1e-3, weight_decay=0.1, layer_decay=0.5)


def test_flip_drops_patches_of_the_timm_eva_tower():
    from train.budget import measure_step_flops
    from train.strategies import StrategyModule, patch_dropout_modules, set_patch_drop

    model = _model("tiny-eva02-32", patch_dropout=0.5)
    assert [type(m).__name__ for m in patch_dropout_modules(model)] == ["PatchDropoutWithIndices"]
    module = StrategyModule(model, "flip", 32, (0.5,) * 3, (0.25,) * 3).train()
    x = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    texts = torch.randint(0, 100, (8, 32))
    flip = measure_step_flops(lambda: module(x, texts)[0], [module])
    set_patch_drop(module, 0.0)
    clip = measure_step_flops(lambda: module(x, texts)[0], [module])
    assert flip < 0.75 * clip


def _reference_attention(q, k, v):
    weights = torch.softmax(q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5, dim=-1)
    return weights @ v


def test_attention_paths_agree_on_cpu():
    import torch.nn.functional as F

    from zoo.attention import flash_layout_call, sdpa_as_flash_kernel, use_flash_attention

    sdpa = F.scaled_dot_product_attention
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 65, 32, generator=g) for _ in range(3))
    ref = _reference_attention(q, k, v)
    assert torch.allclose(F.scaled_dot_product_attention(q, k, v), ref, atol=1e-5)
    assert torch.allclose(flash_layout_call(sdpa_as_flash_kernel, q, k, v), ref, atol=1e-5)

    # The EVA tower's attention: SDPA, timm's explicit softmax path, and the flash route
    # (layout and dispatch, with SDPA standing in for the kernel) give the same tokens.
    model = _model("tiny-eva02-32").eval()
    images = torch.randn(2, 3, 32, 32, generator=g)
    attns = [m for m in model.modules() if hasattr(m, "fused_attn")]
    assert attns and all(a.fused_attn for a in attns)
    with torch.no_grad():
        fused = model.encode_image(images)
        calls = []

        def kernel(*args, **kwargs):
            calls.append(args[0].shape)
            return sdpa_as_flash_kernel(*args, **kwargs)

        with use_flash_attention(model, torch.device("cpu"), kernel=kernel, dtypes=(torch.float32,)) as on:
            flashed = model.encode_image(images)
        assert on and len(calls) == 4 and calls[0] == (2, 65, 4, 32)  # (B, N, H, D): flash-attn's layout
        assert F.scaled_dot_product_attention is sdpa  # never replaced
        model.encode_image(images)
        assert len(calls) == 4  # the hooks are gone on exit
        for a in attns:
            a.fused_attn = False
        explicit = model.encode_image(images)
    assert torch.allclose(fused, explicit, atol=1e-5) and torch.allclose(fused, flashed, atol=1e-5)
    with use_flash_attention(model, torch.device("cpu")) as on:
        assert not on  # no flash-attn on CPU: SDPA stays


def test_flash_attention_is_routed_per_model():
    """Only the model given the kernel sends its attention there: another EVA tower running in
    the same block, and F.scaled_dot_product_attention called directly, stay on SDPA."""
    import torch.nn.functional as F

    from zoo.attention import attention_modules, sdpa_as_flash_kernel, use_flash_attention

    routed, other = _model("tiny-eva02-32").eval(), _model("tiny-eva02-32").eval()
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    q = torch.randn(2, 4, 65, 32)
    calls = []

    def kernel(*args, **kwargs):
        calls.append(args[0].shape)
        return sdpa_as_flash_kernel(*args, **kwargs)

    with torch.no_grad(), use_flash_attention(routed, torch.device("cpu"), kernel=kernel, dtypes=(torch.float32,)):
        expected = other.encode_image(images)
        F.scaled_dot_product_attention(q, q, q)
        assert calls == []
        flashed = routed.encode_image(images)
        assert len(calls) == 4  # one per block of the routed tower
        other.encode_image(images)
        with pytest.raises(RuntimeError):
            attention_modules(routed)[0](torch.zeros(2, 65, 7))  # a routed forward that raises ...
        calls.clear()
        F.scaled_dot_product_attention(q, q, q)
        other.encode_image(images)
        assert calls == []  # ... leaves no routing behind
    assert torch.allclose(flashed, expected, atol=1e-5)  # same weights (seed 0), same tokens


@pytest.mark.parametrize("name", ["tiny-vit-32", "tiny-eva02-32"])
def test_mim_targets_are_patch_tokens_in_the_teachers_embedding_space(name):
    """EVA regresses the teacher's language-aligned features: each patch token through the
    final norm and projection as the pooled token goes. With average pooling, the mean of
    those tokens is the tower's own image embedding."""
    from train.mim_model import aligned_tokens

    model = _model(name).eval()
    visual = model.visual
    if hasattr(visual, "trunk"):
        visual.trunk.global_pool = "avg"
    else:
        visual.pool_type = "avg"
    with torch.no_grad():  # a trained tower's norms: a fresh LayerNorm (1, 0) is idempotent and hides a second one
        for norm in (m for m in visual.modules() if isinstance(m, torch.nn.LayerNorm)):
            norm.weight.uniform_(0.5, 2.0)
            norm.bias.normal_()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        tokens = aligned_tokens(visual, x)
        embedding = visual(x)
    assert tokens.shape == (3, 64, embedding.shape[-1])
    assert torch.allclose(tokens.mean(1), embedding, atol=1e-5)


def test_an_attention_pooled_teacher_is_refused_in_one_line():
    """Its pooled token is a learned query over the patches, so no per-patch projection
    matches it: MIM refuses such a teacher rather than regress something else."""
    from open_clip.transformer import VisionTransformer

    from train.mim_model import MimModule, NoPatchTokens

    torch.manual_seed(0)
    teacher = VisionTransformer(image_size=32, patch_size=4, width=64, layers=1, heads=2, mlp_ratio=2.0,
                                output_dim=32, attentional_pool=True)
    norm = (0.5,) * 3
    with pytest.raises(NoPatchTokens, match="attention-pooled ViT") as err:
        MimModule(_model("tiny-eva02-32"), teacher, norm, norm, norm, norm, 32, 0.4)
    assert "\n" not in str(err.value)
