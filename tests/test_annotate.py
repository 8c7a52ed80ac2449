"""`curate annotate`: caption language (lingua), MetaCLIP's entry matching, the suite's class
names; resumable per shard; and the metaclip recipe's balancing over what it wrote."""
from __future__ import annotations

import math
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clikit.errors import UserError
from curate.annotate.entries import WORDNET_NOUNS, wordnet_nouns
from curate.annotate.matching import EntryMatcher
from curate.annotate.run import annotate_pool
from curate.catalog import open_catalog
from curate.filter.run import run_filter
from poolfactory import make_pool
from shards.layout import Pool


def _metaclip_reference(text: str, entries: list[str]) -> list[int]:
    """MetaCLIP's substr_matching (facebookresearch/MetaCLIP, the plain loop before its
    Aho-Corasick version), on lower-cased text and entries."""
    spaced = f" {text.lower()} "
    for punct in [",", ".", ";", ":", "?", "!", "`"]:
        spaced = spaced.replace(punct, f" {punct} ")
    for char in ["\t", "\n", "\r"]:
        spaced = spaced.replace(char, " ")
    return [i for i, entry in enumerate(entries) if f" {entry.lower()} " in spaced]


def test_matching_is_metaclips_substring_rule():
    entries = ["red", "ice cream", "car", "a", "cream", "red car", "bored", "Sun", "x-ray", "car."]
    matcher = EntryMatcher(entries)
    assert [entries[i] for i in matcher.ids("A red car, and ice cream.")] == ["red", "ice cream", "car", "a", "cream", "red car"]
    assert matcher.ids("bored cars") == [6] and matcher.ids(None) == [] and matcher.ids("") == []
    rng = random.Random(0)
    words = ["red", "ice", "cream", "car", "a", "sun", "bored", "x-ray", "cars", ".", ",", "!", "\t", "Sun", "RED"]
    for _ in range(2000):
        text = " ".join(rng.choice(words) for _ in range(rng.randint(0, 9))).replace(" .", ".")
        assert matcher.ids(text) == _metaclip_reference(text, entries), text


def test_wordnet_nouns_from_debians_package():
    nouns = wordnet_nouns(WORDNET_NOUNS)
    assert len(nouns) > 100_000 and len(set(nouns)) == len(nouns)
    assert {"ice cream", "dog", "bicycle", "lighthouse"} <= set(nouns)


def _annotations(pool) -> dict[str, dict]:
    with open_catalog(pool) as catalog:
        rows = catalog.con.sql("SELECT * FROM annotations").to_arrow_table().to_pylist()
    return {r["uid"]: r for r in rows}


def test_annotate_writes_a_file_per_shard_and_resumes(tmp_path):
    fp = make_pool(tmp_path / "pool", shards=3, per_shard=10)
    (tmp_path / "classes.txt").write_text("Dog\nbicycle\nramen\nkite\n")
    (tmp_path / "entries.txt").write_text("snow\ndogs\nbrick wall\nkite\n")
    result = annotate_pool(fp.path, metadata=str(tmp_path / "entries.txt"), classes=tmp_path / "classes.txt",
                           progress=False)
    assert (result.shards_annotated, result.rows) == (3, 30)
    layout = Pool(fp.path)
    rows = _annotations(fp.path)
    assert set(rows) == {s.uid for s in fp.samples}  # every row of shards/, failures too
    entries = pq.read_table(layout.annotation_entries).to_pylist()
    metadata = [e["entry"] for e in entries if e["list"] == "metadata"]
    assert metadata == ["snow", "dogs", "brick wall", "kite", "dog", "bicycle", "ramen"]  # + the classes, once
    for s in fp.samples:
        row = rows[s.uid]
        assert row["entry_ids"] == EntryMatcher(metadata).ids(s.caption)
        assert row["class_ids"] == EntryMatcher(["dog", "bicycle", "ramen", "kite"]).ids(s.caption)
        if s.caption.startswith("a red bicycle leaning"):
            assert row["caption_language"] == "en" and row["class_ids"] == [1] and 2 in row["entry_ids"]
        if s.caption.startswith("two dogs playing"):
            assert row["class_ids"] == [] and row["entry_ids"] == [0, 1]  # "dogs" is not the class "dog"

    # a lost shard is annotated again, to the same bytes; the others are left alone
    before = {s: layout.annotations_parquet(s).read_bytes() for s in layout.annotated_shards()}
    layout.annotations_parquet("00001").unlink()
    again = annotate_pool(fp.path, metadata=str(tmp_path / "entries.txt"), classes=tmp_path / "classes.txt",
                          progress=False)
    assert (again.shards_annotated, again.shards_skipped) == (1, 2)
    assert {s: layout.annotations_parquet(s).read_bytes() for s in layout.annotated_shards()} == before

    # other settings are refused unless --overwrite, which starts over
    with pytest.raises(UserError, match="--overwrite"):
        annotate_pool(fp.path, metadata="none", progress=False)
    redone = annotate_pool(fp.path, metadata="none", overwrite=True, progress=False)
    assert redone.shards_annotated == 3 and redone.columns == ["uid", "caption_language"]


def test_annotate_refuses_bad_lists(tmp_path):
    fp = make_pool(tmp_path / "pool", shards=1, per_shard=4)
    with pytest.raises(UserError, match="--classes .* does not exist"):
        annotate_pool(fp.path, classes=tmp_path / "nope", progress=False)
    (tmp_path / "empty.txt").write_text("\n \n")
    with pytest.raises(UserError, match="names no classes"):
        annotate_pool(fp.path, classes=tmp_path / "empty.txt", progress=False)
    with pytest.raises(UserError, match="--metadata nope.txt is not a file"):
        annotate_pool(fp.path, metadata="nope.txt", progress=False)
    assert not Pool(fp.path).annotations_dir.exists()


@pytest.fixture
def balanced_pool(tmp_path):
    """A scored pool with hand-written annotations: every scored sample but every tenth
    matches entry 0; the first three also match entry 1; entry 2 matches no one."""
    fp = make_pool(tmp_path / "pool", shards=4, per_shard=100)
    ok = [s.uid for s in fp.ok]
    ids = [[] if i % 10 == 9 else ([0, 1] if i < 3 else [0]) for i in range(len(ok))]
    layout = Pool(fp.path)
    layout.annotations_dir.mkdir()
    pq.write_table(pa.table({"uid": ok, "caption_language": ["en"] * len(ok),
                             "entry_ids": pa.array(ids, pa.list_(pa.int32()))}), layout.annotations_parquet(0))
    return fp.path, dict(zip(ok, ids))


def _kept(pool, name, **params) -> set[str]:
    return set(pq.read_table(run_filter(pool, name, recipe="metaclip", params=params).parquet)["uid"].to_pylist())


def test_metaclip_caps_each_entry_at_t_in_expectation(balanced_pool):
    pool, ids = balanced_pool
    n0 = sum(0 in e for e in ids.values())
    t = 40
    kept = _kept(pool, "m0", t=t, seed=0)
    assert all(ids[u] for u in kept)  # samples matching no entry are dropped
    assert {u for u, e in ids.items() if 1 in e} <= kept  # entry 1 (3 samples <= t) keeps them all
    common = [u for u, e in ids.items() if e == [0]]
    kept_common = len(kept & set(common))
    p = t / n0  # entry 0 is over t: each of its samples stays with probability t / count
    mean, sd = len(common) * p, math.sqrt(len(common) * p * (1 - p))
    assert abs(kept_common - mean) < 4 * sd, (kept_common, mean, sd)
    assert _kept(pool, "m0-again", t=t, seed=0) == kept  # the draws are data: the same seed, the same subset
    assert _kept(pool, "m1", t=t, seed=1) != kept
    assert _kept(pool, "all", t=n0, seed=0) == {u for u, e in ids.items() if e}  # no entry over t: all matched
