"""Evaluation metrics on hand-built cases whose answers are known in advance (not ranges).

A stand-in model maps each image (identified by its red channel) and each text (by the
number in it) to a chosen vector, so every logit, and so every rank, is set by hand."""
from __future__ import annotations

import re

import pytest
import torch
from PIL import Image

from train.evaluate import retrieval, zero_shot


class TableModel(torch.nn.Module):
    def __init__(self, image_vectors, text_vectors):
        super().__init__()
        self.images = torch.tensor(image_vectors, dtype=torch.float32)
        self.texts = torch.tensor(text_vectors, dtype=torch.float32)

    def encode_image(self, ids, normalize=False):
        out = self.images[ids.long()]
        return torch.nn.functional.normalize(out, dim=-1) if normalize else out

    def encode_text(self, ids, normalize=False):
        out = self.texts[ids.long()]
        return torch.nn.functional.normalize(out, dim=-1) if normalize else out


def preprocess(image):
    return torch.tensor(image.getpixel((0, 0))[0])  # the image's id, drawn as its red channel


def tokenizer(texts):
    return torch.tensor([int(re.search(r"\d+", t).group()) for t in texts])


def _png(path, image_id):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (image_id, 0, 0)).save(path)


def test_zero_shot_top1_top5_known(tmp_path):
    # 6 classes c0..c5, class text vectors = the standard basis; logits = image vector's components.
    images = [
        ("c0", [1, 0, 0, 0, 0, 0]),              # rank 1: top-1 and top-5 hit
        ("c1", [0.9, 0.5, 0, 0, 0, 0]),          # rank 2: top-1 miss, top-5 hit
        ("c5", [6, 5, 4, 3, 2, 1]),              # rank 6: both miss
        ("c3", [0.1, 0.2, 0.3, 0.9, 0.4, 0.5]),  # rank 1: hit
    ]
    for i, (label, _) in enumerate(images):
        _png(tmp_path / label / f"{i}.png", i)
    for c in range(6):
        (tmp_path / f"c{c}").mkdir(exist_ok=True)
    (tmp_path / "templates.txt").write_text("{c}\n")
    model = TableModel([v for _, v in images], torch.eye(6).tolist())
    out = zero_shot(model, preprocess, tokenizer, tmp_path, "cpu", batch_size=3)
    assert out["zeroshot_top1"] == 2 / 4 and out["zeroshot_top5"] == 3 / 4
    assert (out["zeroshot_classes"], out["zeroshot_images"], out["zeroshot_templates"]) == (6, 4, 1)


def test_zero_shot_skips_undecodable_images_in_the_count(tmp_path):
    for c in range(2):
        _png(tmp_path / f"c{c}" / "0.png", c)
    (tmp_path / "c1" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    (tmp_path / "templates.txt").write_text("{c}\n")
    out = zero_shot(TableModel([[1, 0], [1, 0.1]], [[1, 0], [0, 1]]), preprocess, tokenizer, tmp_path, "cpu")
    assert out["zeroshot_images"] == 2 and out["zeroshot_top1"] == 0.5  # image 1 is nearer class 0


def test_eval_images_are_decoded_once_per_process_until_a_file_changes(tmp_path, monkeypatch):
    """A sweep's cells evaluate the same folder: the second eval preprocesses nothing and
    gives the same answer; a rewritten image is read again (its answer changes); a folder
    over the cache bound streams and is not kept."""
    import os

    from train import evaluate as E

    monkeypatch.setattr(E, "_PREPARED", {})
    calls = []

    def counting(image):
        calls.append(1)
        return preprocess(image)

    for c in range(2):
        _png(tmp_path / f"c{c}" / "0.png", c)
    (tmp_path / "templates.txt").write_text("{c}\n")
    model = TableModel([[1, 0], [0, 1], [1, 0]], [[1, 0], [0, 1]])
    first = zero_shot(model, counting, tokenizer, tmp_path, "cpu")
    assert first["zeroshot_top1"] == 1.0 and len(calls) == 2
    assert zero_shot(model, counting, tokenizer, tmp_path, "cpu") == first and len(calls) == 2

    _png(tmp_path / "c1" / "0.png", 2)  # now looks like class 0
    os.utime(tmp_path / "c1" / "0.png", ns=(1, 1))
    assert zero_shot(model, counting, tokenizer, tmp_path, "cpu")["zeroshot_top1"] == 0.5 and len(calls) == 4

    monkeypatch.setattr(E, "_PREPARED", {})
    monkeypatch.setattr(E, "PREPARED_CACHE_BYTES", 4)  # one 8-byte id tensor is already over
    assert zero_shot(model, counting, tokenizer, tmp_path, "cpu")["zeroshot_top1"] == 0.5
    assert E._PREPARED == {} and len(calls) == 6


@pytest.mark.parametrize("batch_size", [1, 3, 256])
def test_retrieval_recall_known(tmp_path, batch_size):
    # texts t0..t3 = basis vectors, so similarities are the image vectors' (normalised) components.
    image_vectors = [
        [1, 0, 0, 0],          # best text t0: hit at 1
        [0.6, 0.8, 0, 0],      # t1 first: hit at 1
        [0.8, 0, 0.6, 0],      # t0 then t2: hit at 2
        [0.5, 0.4, 0.3, 0.1],  # t3 last of 4: hit at 4
    ]
    pairs = []
    for i in range(4):
        _png(tmp_path / f"{i}.png", i)
        pairs.append((tmp_path / f"{i}.png", f"t{i}"))
    out = retrieval(TableModel(image_vectors, torch.eye(4).tolist()), preprocess, tokenizer, pairs, "cpu", batch_size)
    assert out["retrieval_pairs"] == 4
    assert (out["image_to_text_R@1"], out["image_to_text_R@5"], out["image_to_text_R@10"]) == (0.5, 1.0, 1.0)
    # column j: text j's best image is image j for every j (image 3's 0.1/0.7 is still the only non-zero)
    assert (out["text_to_image_R@1"], out["text_to_image_R@5"]) == (1.0, 1.0)


# --- the pixel cap in train's decoders ---------------------------------------------------

def test_zero_shot_refuses_a_huge_image_in_the_eval_folder_by_name(tmp_path):
    from clikit.errors import UserError
    from test_bad_input import png_header_only

    for c in range(2):
        _png(tmp_path / f"c{c}" / "0.png", c)
    huge = tmp_path / "c1" / "huge.png"
    huge.write_bytes(png_header_only(8000, 8000))  # 64 Mpx in a few KB: over the 50 Mpx cap
    (tmp_path / "templates.txt").write_text("{c}\n")
    model = TableModel([[1, 0], [1, 0.1]], [[1, 0], [0, 1]])
    with pytest.raises(UserError) as err:
        zero_shot(model, preprocess, tokenizer, tmp_path, "cpu")
    assert str(err.value) == (f"{huge}: image area too large (8000x8000 px, 64,000,000 pixels over the 50,000,000 "
                              "cap; refused before decoding); shrink it or move it out of the eval folder")


def test_retrieval_and_the_training_stream_skip_a_huge_image_from_shards(tmp_path):
    from test_bad_input import png_header_only
    from train.data import _crop

    huge = png_header_only(8000, 8000)
    _png(tmp_path / "0.png", 0)
    pairs = [((tmp_path / "0.png").read_bytes(), "t0"), (huge, "t1")]
    out = retrieval(TableModel([[1, 0]], torch.eye(2).tolist()), preprocess, tokenizer, pairs, "cpu")
    assert out["retrieval_pairs"] == 1 and out["image_to_text_R@1"] == 1.0  # the huge one skipped, not decoded

    class Crop:  # the two StreamConfig fields _crop reads
        crop_scale, image_size = (0.9, 1.0), 16

    assert _crop(huge, Crop, seed=0) is None  # skipped and counted by the stream, like a broken image
    assert tuple(_crop((tmp_path / "0.png").read_bytes(), Crop, seed=0).shape) == (3, 16, 16)
