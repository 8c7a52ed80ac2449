"""The demo pool generator: determinism, every kind of noise and fault, table agreement."""
from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import imagehash
import pyarrow.parquet as pq
import pytest
from PIL import Image

from curate.demo import (CLASSES, COLOURS, EXPECTED_OUTCOME, HUGE_MIN_PIXELS, KINDS, MIN_SIDE, kind_counts,
                         make_demo_pool)
from curate.demo.captions import plural
from curate.demo.faults import NEAR_DUP_MAX_PHASH_BITS
from clikit.errors import UserError
from shards.uid import sample_uid

BASE = "http://127.0.0.1:8765"
SIZE = 300


@pytest.fixture(scope="module")
def pool(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "pool"
    make_demo_pool(out, size=SIZE, seed=3, base_url=BASE, eval_per_class=4)
    return out


@pytest.fixture(scope="module")
def truth(pool) -> list[dict]:
    return pq.read_table(pool / "truth.parquet").to_pylist()


def _files(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _names(text: str, label: str) -> bool:
    """Whether text names the class (singular or plural) as whole words."""
    return re.search(rf"\b({re.escape(label)}|{re.escape(plural(label))})\b", text.lower()) is not None


def test_same_seed_gives_identical_files_and_another_seed_differs(tmp_path):
    args = dict(size=120, base_url=BASE, seed_size=20, eval_per_class=2)
    a = make_demo_pool(tmp_path / "a", seed=5, **args)
    b = make_demo_pool(tmp_path / "b", seed=5, **args)
    c = make_demo_pool(tmp_path / "c", seed=6, **args)
    files_a, files_b, files_c = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert files_a == files_b
    assert a["kinds"] == b["kinds"] and a["out"] != b["out"]
    assert pq.read_table(tmp_path / "a" / "metadata.parquet").equals(pq.read_table(tmp_path / "b" / "metadata.parquet"))
    assert not pq.read_table(tmp_path / "a" / "metadata.parquet").equals(pq.read_table(tmp_path / "c" / "metadata.parquet"))
    images_a = {h for name, h in files_a.items() if name.startswith("images/")}
    images_c = {h for name, h in files_c.items() if name.startswith("images/")}
    assert len(images_a & images_c) == 0, "another seed should draw other images"
    assert c["kinds"] == a["kinds"]  # counts depend on the size only


def test_every_kind_is_present_with_its_planned_count(pool, truth):
    counts = defaultdict(int)
    for row in truth:
        counts[row["kind"]] += 1
    assert set(counts) == set(KINDS)
    assert dict(counts) == {k: v for k, v in kind_counts(SIZE).items()}
    assert all(counts[k] >= 2 for k in KINDS)
    assert 0.55 < counts["clean"] / SIZE < 0.75
    for row in truth:
        assert row["expect"] == EXPECTED_OUTCOME.get(row["kind"], "success")


def test_uids_and_the_three_tables_agree(pool, truth):
    laion = pq.read_table(pool / "metadata.parquet")
    coyo = pq.read_table(pool / "metadata_coyo.parquet")
    assert laion.column_names == ["URL", "TEXT", "WIDTH", "HEIGHT"]
    assert coyo.column_names == ["id", "url", "text", "width", "height"]
    assert str(coyo.schema.field("id").type) == "int64"
    assert {"uid", "url", "caption", "kind", "dup_group", "label", "expect"} <= set(pq.read_schema(pool / "truth.parquet").names)
    assert str(pq.read_schema(pool / "truth.parquet").field("dup_group").type) == "int64"
    laion_rows, coyo_rows = laion.to_pylist(), coyo.to_pylist()
    assert len(laion_rows) == len(coyo_rows) == len(truth) == SIZE
    for t, l, c in zip(truth, laion_rows, coyo_rows):
        assert t["uid"] == sample_uid(t["url"], t["caption"])
        assert (l["URL"], l["TEXT"], l["WIDTH"], l["HEIGHT"]) == (t["url"], t["caption"], t["width"], t["height"])
        assert (c["url"], c["text"], c["width"], c["height"]) == (t["url"], t["caption"], t["width"], t["height"])
        assert t["url"].startswith(BASE + "/")
    assert len({r["uid"] for r in truth}) == SIZE
    assert len({r["url"] for r in truth}) == SIZE
    assert len({r["id"] for r in coyo_rows}) == SIZE
    # Shuffled: the kinds are not laid out in blocks.
    first = [r["kind"] for r in truth[:40]]
    assert len(set(first)) > 3


def test_success_rows_are_served_files_that_decode_at_the_stated_size(pool, truth):
    routes = {"slow": "/slow/", "redirect": "/redirect/"}
    for row in truth:
        if row["expect"] != "success":
            continue
        assert row["label"] in CLASSES
        assert row["url"] == f"{BASE}{routes.get(row['kind'], '/')}{row['path']}"
        with Image.open(pool / row["path"]) as im:
            im.load()
            assert im.size == (row["width"], row["height"])
            assert im.format in ("JPEG", "PNG")
            assert min(im.size) >= MIN_SIDE and im.size[0] * im.size[1] < HUGE_MIN_PIXELS
    formats = {Path(r["path"]).suffix for r in truth if r["expect"] == "success"}
    assert formats == {".jpg", ".png"}
    sizes = {(r["width"], r["height"]) for r in truth if r["kind"] == "clean"}
    assert len(sizes) > 50 and any(w > h for w, h in sizes) and any(w < h for w, h in sizes)


def test_duplicates_copy_or_nearly_copy_their_original(pool, truth):
    groups = defaultdict(list)
    for row in truth:
        if row["dup_group"] is not None:
            groups[row["dup_group"]].append(row)
        else:
            assert row["kind"] not in ("dup-exact", "dup-near")
    assert groups
    for members in groups.values():
        originals = [r for r in members if r["kind"] == "clean"]
        copies = [r for r in members if r["kind"] != "clean"]
        assert len(originals) == 1 and copies
        original = originals[0]
        data = (pool / original["path"]).read_bytes()
        ref_hash = imagehash.phash(Image.open(pool / original["path"]))
        for copy in copies:
            assert copy["label"] == original["label"] and copy["url"] != original["url"]
            copied = (pool / copy["path"]).read_bytes()
            if copy["kind"] == "dup-exact":
                assert copied == data
            else:
                assert copy["kind"] == "dup-near" and copied != data
                assert ref_hash - imagehash.phash(Image.open(pool / copy["path"])) <= NEAR_DUP_MAX_PHASH_BITS


def test_faults_really_fail_the_way_truth_says(pool, truth):
    by_kind = defaultdict(list)
    for row in truth:
        by_kind[row["kind"]].append(row)
    for row in by_kind["broken-404"] + by_kind["not-image"]:
        assert row["path"] is None
        assert not (pool / row["url"][len(BASE) + 1:]).exists()
    assert all(r["url"].startswith(f"{BASE}/html/") for r in by_kind["not-image"])
    for row in by_kind["tiny"]:
        with Image.open(pool / row["path"]) as im:
            im.load()
            assert min(im.size) < MIN_SIDE and im.size == (row["width"], row["height"])
    huge_formats = set()
    for row in by_kind["huge"]:
        with Image.open(pool / row["path"]) as im:  # header only: never decode 80 Mpx here
            assert im.size[0] * im.size[1] >= HUGE_MIN_PIXELS and im.size == (row["width"], row["height"])
            huge_formats.add(im.format)
        assert (pool / row["path"]).stat().st_size < 2_000_000
    assert "PNG" in huge_formats
    for row in by_kind["truncated"]:
        with Image.open(pool / row["path"]) as im:
            assert im.format == "JPEG" and im.size == (row["width"], row["height"])
            with pytest.raises(OSError):
                im.load()


def test_captions_name_the_class_and_noise_is_noisy(truth):
    for row in truth:
        text = row["caption"].lower()
        if row["kind"] in ("clean", "dup-exact", "dup-near", "partial", "slow", "redirect"):
            assert _names(text, row["label"]), row
        if row["kind"] in ("clean", "dup-exact", "dup-near"):
            assert any(re.search(rf"\b{colour}\b", text) for colour in COLOURS), row
        if row["kind"] == "mismatched":
            assert not _names(text, row["label"]) and any(_names(text, c) for c in CLASSES), row
        if row["kind"] == "generic":
            assert not any(_names(text, c) for c in CLASSES), row
    clean = [r["caption"] for r in truth if r["kind"] == "clean"]
    assert len(set(clean)) > 0.9 * len(clean), "captions should be paraphrased, not one template"


def test_seed_set_is_clean_and_disjoint_from_the_pool(pool, truth):
    seed = pq.read_table(pool / "seed.parquet")
    assert seed.column_names == ["URL", "TEXT", "WIDTH", "HEIGHT"]
    rows = seed.to_pylist()
    assert len(rows) == max(200, SIZE // 4)
    assert not {r["URL"] for r in rows} & {r["url"] for r in truth}
    pool_hashes = {hashlib.sha256((pool / r["path"]).read_bytes()).digest() for r in truth if r["path"]}
    labels = set()
    for row in rows:
        path = pool / row["URL"][len(BASE) + 1:]
        assert row["URL"].startswith(f"{BASE}/images/")
        assert hashlib.sha256(path.read_bytes()).digest() not in pool_hashes
        with Image.open(path) as im:
            im.load()
            assert im.size == (row["WIDTH"], row["HEIGHT"])
        found = [c for c in CLASSES if _names(row["TEXT"], c)]
        assert len(found) == 1
        labels.add(found[0])
    assert labels == set(CLASSES)


def test_eval_set_has_every_class_and_templates(pool):
    folders = sorted(p.name for p in (pool / "eval").iterdir() if p.is_dir())
    assert len(folders) >= 20 and set(folders) == set(CLASSES)
    for name in folders:
        images = sorted((pool / "eval" / name).iterdir())
        assert len(images) == 4 and {p.suffix for p in images} <= {".png", ".jpg"}
        with Image.open(images[0]) as im:
            im.load()
    templates = (pool / "eval" / "templates.txt").read_text().splitlines()
    assert len(templates) >= 3 and all("{}" in t for t in templates)


def test_finished_pool_is_reused_and_other_content_is_refused(tmp_path):
    out = tmp_path / "pool"
    first = make_demo_pool(out, size=40, seed=1, base_url=BASE, seed_size=5, eval_per_class=1)
    stamp = (out / "truth.parquet").stat().st_mtime_ns
    again = make_demo_pool(out, size=40, seed=1, base_url=BASE, seed_size=5, eval_per_class=1)
    assert again["kinds"] == first["kinds"] and (out / "truth.parquet").stat().st_mtime_ns == stamp
    with pytest.raises(UserError, match="not empty"):
        make_demo_pool(out, size=40, seed=2, base_url=BASE, seed_size=5, eval_per_class=1)
    make_demo_pool(out, size=40, seed=2, base_url=BASE, seed_size=5, eval_per_class=1, overwrite=True)
    assert (out / "truth.parquet").stat().st_mtime_ns != stamp
    assert [p.name for p in tmp_path.iterdir()] == ["pool"], "no temporary folder left behind"
    with pytest.raises(UserError, match="base-url"):
        make_demo_pool(tmp_path / "x", size=40, base_url="127.0.0.1:8000")


def _curate(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"}
    return subprocess.run([sys.executable, "-m", "curate", *args], capture_output=True, text=True, env=env,
                          timeout=120)


def test_cli_writes_a_pool_and_rejects_bad_input_in_one_line(tmp_path):
    done = _curate("demo-pool", str(tmp_path / "p"), "--size", "40", "--seed-size", "5", "--eval-per-class", "1",
                   "--base-url", BASE)
    assert done.returncode == 0, done.stderr
    assert "40 pool rows" in done.stdout and (tmp_path / "p" / "truth.parquet").is_file()
    (tmp_path / "file").write_text("x")
    for args in (["--size", "0"], ["--base-url", "ftp://x"]):
        bad = _curate("demo-pool", str(tmp_path / "q"), *args)
        assert bad.returncode == 2 and "Traceback" not in bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1 and "error:" in bad.stderr
    bad = _curate("demo-pool", str(tmp_path / "file"))
    assert bad.returncode == 2 and "is a file" in bad.stderr and (tmp_path / "file").read_text() == "x"
    assert not (tmp_path / "q").exists()


def test_source_shapes_is_the_default_and_its_demo_json_names_no_source(tmp_path):
    args = dict(size=40, seed=1, base_url=BASE, seed_size=5, eval_per_class=1)
    make_demo_pool(tmp_path / "a", **args)
    make_demo_pool(tmp_path / "b", source="shapes", **args)
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    assert "source" not in (tmp_path / "a" / "demo.json").read_text()
    with pytest.raises(UserError, match="--source"):
        make_demo_pool(tmp_path / "c", source="nope", **args)
