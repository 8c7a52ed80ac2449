"""The real demo pool (--source real): installed Fashion-MNIST, GNOME/Adwaita icons and
scikit-image photos, with the shapes pool's kinds, duplicates, faults and tables."""
from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

from clikit.errors import UserError
from curate.demo import EXPECTED_OUTCOME, HUGE_MIN_PIXELS, KINDS, MIN_SIDE, kind_counts, make_demo_pool
from curate.demo import real_data
from curate.demo.faults import NEAR_DUP_MAX_PHASH_BITS
from curate.demo.real_captions import plural
from curate.score.batched import phash
from shards.uid import sample_uid

SIZE, PER_CLASS = 300, 4  # pool rows, eval images per class


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The real pool, built into a folder served on loopback; yields (folder, base url)."""
    from curate.serve import start_server

    root = tmp_path_factory.mktemp("realdemo")
    server = start_server(root, port=0)
    try:
        make_demo_pool(root, size=SIZE, seed=7, base_url=server.url, eval_per_class=PER_CLASS, source="real")
        yield root, server.url
    finally:
        server.close()


@pytest.fixture(scope="module")
def pool(served) -> Path:
    return served[0]


@pytest.fixture(scope="module")
def truth(pool) -> list[dict]:
    return pq.read_table(pool / "truth.parquet").to_pylist()


@pytest.fixture(scope="module")
def summary(pool) -> dict:
    return json.loads((pool / "demo.json").read_text())


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _files(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): _sha(p) for p in sorted(root.rglob("*")) if p.is_file()}


def _names(text: str, label: str, classes: list[str]) -> bool:
    """Whether text names `label` (or its plural) as whole words, not only inside a longer
    class name ("shirt" in "t-shirt")."""
    text = text.lower()
    for longer in sorted((c for c in classes if c != label and label in c), key=len, reverse=True):
        text = re.sub(rf"\b({re.escape(longer)}|{re.escape(plural(longer))})\b", " ", text)
    return re.search(rf"(?<![\w-])({re.escape(label)}|{re.escape(plural(label))})\b", text) is not None


def test_every_kind_with_the_shapes_pools_counts_and_tables_agree(pool, truth):
    assert Counter(r["kind"] for r in truth) == Counter(kind_counts(SIZE))
    assert set(r["kind"] for r in truth) == set(KINDS)
    laion = pq.read_table(pool / "metadata.parquet").to_pylist()
    coyo = pq.read_table(pool / "metadata_coyo.parquet").to_pylist()
    assert pq.read_schema(pool / "truth.parquet").names == ["uid", "url", "caption", "kind", "dup_group", "label",
                                                             "expect", "path", "width", "height"]
    for t, l, c in zip(truth, laion, coyo, strict=True):
        assert t["expect"] == EXPECTED_OUTCOME.get(t["kind"], "success")
        assert t["uid"] == sample_uid(t["url"], t["caption"])
        assert (l["URL"], l["TEXT"], l["WIDTH"], l["HEIGHT"]) == (t["url"], t["caption"], t["width"], t["height"])
        assert (c["url"], c["text"], c["width"], c["height"]) == (t["url"], t["caption"], t["width"], t["height"])
    assert len({r["uid"] for r in truth}) == SIZE


def test_truth_matches_the_files(pool, truth, summary):
    classes = set(summary["classes"])
    for row in truth:
        if row["kind"] in ("broken-404", "not-image"):
            assert row["path"] is None and row["label"] is None
            continue
        assert row["label"] in classes and (pool / row["path"]).is_file()
        with Image.open(pool / row["path"]) as im:
            assert im.size == (row["width"], row["height"])
            if row["kind"] == "huge":  # header only: never decode 80 Mpx here
                assert im.size[0] * im.size[1] >= HUGE_MIN_PIXELS
                assert (pool / row["path"]).stat().st_size < 2_000_000
            elif row["kind"] == "truncated":
                with pytest.raises(OSError):
                    im.load()
            else:
                im.load()
                assert im.format in ("JPEG", "PNG")
                assert (min(im.size) < MIN_SIDE) == (row["kind"] == "tiny")
                assert row["kind"] in ("tiny", "dup-near") or min(im.size) >= 64


def test_classes_from_every_source_and_one_drawing_per_icon(truth, summary):
    icons, photos = set(real_data.ICONS.values()), set(real_data.PHOTOS.values())
    labels = {r["label"] for r in truth if r["label"]}
    assert set(real_data.FASHION_CLASSES) <= labels and len(labels & icons) >= 30
    assert bool(labels & photos) == real_data.skimage_available()
    assert len(summary["classes"]) >= 75
    # Another rendering of an icon or photo is a near duplicate: only planned groups may hold one.
    shown: dict[str, set] = defaultdict(set)
    for row in truth:
        if row["path"] and row["label"] in icons | photos:
            shown[row["label"]].add(row["dup_group"] if row["dup_group"] is not None else row["uid"])
    assert shown and all(len(units) == 1 for units in shown.values())


def test_duplicates_are_copies_or_close_edits_of_real_photos(pool, truth):
    groups = defaultdict(list)
    for row in truth:
        if row["dup_group"] is not None:
            groups[row["dup_group"]].append(row)
    kinds = Counter(r["kind"] for m in groups.values() for r in m)
    assert kinds["dup-exact"] == kind_counts(SIZE)["dup-exact"] and kinds["dup-near"] == kind_counts(SIZE)["dup-near"]
    for members in groups.values():
        (original,) = [r for r in members if r["kind"] == "clean"]
        data = (pool / original["path"]).read_bytes()
        with Image.open(pool / original["path"]) as im:
            ref = phash(im.convert("RGB"))
        for copy in (r for r in members if r is not original):
            assert copy["label"] == original["label"]
            if copy["kind"] == "dup-exact":
                assert (pool / copy["path"]).read_bytes() == data
            else:
                assert (pool / copy["path"]).read_bytes() != data
                with Image.open(pool / copy["path"]) as im:
                    assert (phash(im.convert("RGB")) ^ ref).bit_count() <= NEAR_DUP_MAX_PHASH_BITS


def test_captions_name_the_label_and_noise_is_noisy(truth, summary):
    classes = summary["classes"]
    for row in truth:
        text = row["caption"]
        if row["kind"] in ("clean", "dup-exact", "dup-near", "partial", "slow", "redirect", "tiny"):
            assert _names(text, row["label"], classes), row
        if row["kind"] == "mismatched":
            assert not _names(text, row["label"], classes) and any(_names(text, c, classes) for c in classes), row
        if row["kind"] == "generic":
            assert not any(_names(text, c, classes) for c in classes), row
    clean = [r["caption"] for r in truth if r["kind"] == "clean"]
    assert len(set(clean)) > 0.8 * len(clean)
    partial = [r["caption"] for r in truth if r["kind"] == "partial"]
    assert any(re.search(r"\b(two|three|2|3|a couple of)\b", t) for t in partial)


def test_seed_set_is_clean_balanced_and_apart_from_the_pool(pool, truth, summary):
    rows = pq.read_table(pool / "seed.parquet").to_pylist()
    classes = summary["classes"]
    assert len(rows) == summary["seed_rows"] == max(200, SIZE // 4)
    pool_hashes = {_sha(pool / r["path"]) for r in truth if r["path"]}
    assert not {r["URL"] for r in rows} & {r["url"] for r in truth}
    found = Counter()
    for row in rows:
        path = pool / row["URL"].split("/", 3)[3]
        assert _sha(path) not in pool_hashes
        with Image.open(path) as im:
            im.load()
            assert im.size == (row["WIDTH"], row["HEIGHT"]) and min(im.size) >= 64
        (label,) = [c for c in classes if _names(row["TEXT"], c, classes)]
        found[label] += 1
    counts = [found[c] for c in classes]
    assert max(counts) - min(counts) <= 1, found


def test_eval_images_are_held_out(pool, truth, summary):
    folders = sorted(p.name for p in (pool / "eval").iterdir() if p.is_dir())
    without = set(summary["classes_without_eval"])
    assert set(folders) == set(summary["classes"]) - without
    assert set(real_data.FASHION_CLASSES) <= set(folders) and len(folders) >= 25
    assert summary["eval_images"] == PER_CLASS * len(folders)
    seen = {_sha(pool / r["path"]) for r in truth if r["path"]}
    seen |= {_sha(p) for p in (pool / "images" / "seed").iterdir()}
    for name in folders:
        images = sorted((pool / "eval" / name).iterdir())
        assert len(images) == PER_CLASS
        for path in images:
            assert _sha(path) not in seen
            with Image.open(path) as im:
                im.load()
    templates = (pool / "eval" / "templates.txt").read_text().splitlines()
    assert len(templates) >= 3 and all("{}" in t for t in templates)


def test_held_out_icons_are_other_drawings(summary):
    """Adwaita's drawing of an eval class is not GNOME's (its legacy copies would be)."""
    def grey(icon: Image.Image) -> int:
        ground = Image.new("RGB", icon.size, "white")
        ground.paste(icon, (0, 0), icon)
        return phash(ground.resize((64, 64)))

    names = {label: name for name, label in real_data.ICONS.items()}
    icons = [c for c in summary["classes"] if c in names and c not in summary["classes_without_eval"]]
    assert len(icons) >= 15
    for label in icons:
        assert "legacy" not in str(real_data.adwaita_path(names[label]))
        far = (grey(real_data.gnome_icon(names[label])) ^ grey(real_data.adwaita_icon(names[label]))).bit_count()
        assert far > NEAR_DUP_MAX_PHASH_BITS, label


def test_demo_json_records_the_sources(summary):
    assert summary["source"] == "real"
    sources = summary["sources"]
    assert sources["dataset-fashion-mnist (deb)"] not in ("", "unknown")
    assert sources["gnome-icon-theme (deb)"] not in ("", "unknown")
    assert "scikit-image (pypi)" in sources


def test_same_arguments_same_bytes_and_reuse(tmp_path):
    args = dict(size=120, seed=5, base_url="http://127.0.0.1:8765", seed_size=40, eval_per_class=2, source="real")
    make_demo_pool(tmp_path / "a", **args)
    make_demo_pool(tmp_path / "b", **args)
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    stamp = (tmp_path / "a" / "truth.parquet").stat().st_mtime_ns
    make_demo_pool(tmp_path / "a", **args)
    assert (tmp_path / "a" / "truth.parquet").stat().st_mtime_ns == stamp
    make_demo_pool(tmp_path / "c", **{**args, "seed": 6})
    a = {h for n, h in _files(tmp_path / "a").items() if n.startswith("images/")}
    c = {h for n, h in _files(tmp_path / "c").items() if n.startswith("images/")}
    assert len(a & c) < 0.05 * len(a)
    with pytest.raises(UserError, match="not empty"):
        make_demo_pool(tmp_path / "a", **{**args, "source": "shapes"})


def test_a_missing_package_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setattr(real_data, "FASHION_DIR", tmp_path)  # an empty folder: nothing installed there
    with pytest.raises(UserError) as err:
        make_demo_pool(tmp_path / "p", size=40, source="real")
    assert str(err.value) == real_data.MISSING and not (tmp_path / "p").exists()


def test_cli_rejects_an_unknown_source_in_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "curate", "demo-pool", str(tmp_path / "p"), "--source", "nope"],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"})
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "--source" in done.stderr
    assert not (tmp_path / "p").exists()


def test_the_downloader_gets_exactly_the_expected_successes(served, truth, tmp_path):
    from curate.download.run import DownloadSettings, download_pool

    folder, _ = served
    settings = DownloadSettings(image_size=64, threads=16, samples_per_shard=100, allow_private=True)
    download_pool(folder / "metadata.parquet", tmp_path / "pool", preset="laion", settings=settings)
    rows = [r for p in sorted((tmp_path / "pool" / "shards").glob("*.parquet")) for r in pq.read_table(p).to_pylist()]
    expected = {r["uid"]: r for r in truth}
    assert sorted(r["uid"] for r in rows) == sorted(expected)
    assert {r["uid"] for r in rows if r["status"] == "success"} == {u for u, r in expected.items()
                                                                    if r["expect"] == "success"}
    for row in rows:
        if row["status"] != "success":
            assert row["fail_reason"] == expected[row["uid"]]["expect"], row["error_message"]
