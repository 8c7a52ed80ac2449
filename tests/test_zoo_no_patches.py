"""No global patches, public APIs: importing zoo or train leaves open_clip, timm and the import
system as they are, the zoo's functions register the project's configs through open_clip's
public `add_model_config` when they first need them, and MIM reads open_clip's ViT through its
public `forward_intermediates`."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _python(code: str) -> subprocess.CompletedProcess:
    # A fresh interpreter: this test process has long since registered everything.
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))


def test_importing_zoo_and_train_patches_nothing_and_the_zoo_registers_on_first_use():
    code = """
import sys
finders = list(sys.meta_path)
import zoo, zoo.models, zoo.attention, train, train.cli
assert sys.meta_path == finders, sys.meta_path  # no import hook
assert 'open_clip' not in sys.modules and 'timm' not in sys.modules  # `train --help` stays cheap
import open_clip, timm
assert 'tiny-vit-32' not in open_clip.list_models()  # importing open_clip after zoo registers nothing
assert not timm.is_model('clipcurate_eva02_tiny_32')
from zoo.models import check_model_name, project_model_names, register_model_configs
check_model_name('tiny-vit-32')
assert set(project_model_names()) <= set(open_clip.list_models())
assert timm.is_model('clipcurate_eva02_tiny_32')
count = len(open_clip.list_models())
register_model_configs()
assert len(open_clip.list_models()) == count
print('ok')
"""
    proc = _python(code)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


@pytest.mark.parametrize("pool_type,final_ln_after_pool", [("tok", False), ("avg", False), ("avg", True)])
def test_patch_tokens_of_open_clips_vit_are_the_tokens_its_own_forward_returns(pool_type, final_ln_after_pool):
    """train.mim_model.patch_tokens reads open_clip's ViT through its public forward_intermediates;
    the known answer is open_clip's forward with output_tokens=True. ln_post gets weights far
    from identity, so taking it once too often, or once too few, changes the tokens."""
    from open_clip.transformer import VisionTransformer

    from train.mim_model import patch_tokens

    torch.manual_seed(0)
    tower = VisionTransformer(32, 4, 64, 2, 4, 4.0, output_dim=32, pool_type=pool_type,
                              final_ln_after_pool=final_ln_after_pool, output_tokens=True).eval()
    with torch.no_grad():
        tower.ln_post.weight.uniform_(0.5, 2.0)
        tower.ln_post.bias.uniform_(-1.0, 1.0)
        images = torch.randn(2, 3, 32, 32)
        tokens = patch_tokens(tower, images)
        assert tokens.shape == (2, 64, 64)
        assert torch.equal(tokens, tower(images)[1])
