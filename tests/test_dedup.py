"""curate dedup on real files: scores parquet (pyarrow), float16 .npy embeddings, real FAISS."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curate.dedup.quality import pair_quality
from curate.dedup.run import DedupSettings, run_dedup
from curate.dedup.synthetic import near_copy, planted_pool, random_vectors, uid_of, write_shard
from curate.errors import UserError

DIM = 32
N = 300
ROOT = Path(__file__).resolve().parents[1]


def _sha(i: int) -> str:
    return hashlib.sha256(f"img-{i}".encode()).hexdigest()


@pytest.fixture
def planted(tmp_path):
    """300 rows in 3 shards with known duplicates of every kind:
    near (cos ~0.97): 10~20, 150~250 (across shards), chain 30~31~32;
    exact bytes: 40 = 41; identical phash: 60 = 61; phash 3 bits apart: 70 ~ 71."""
    rng = np.random.default_rng(3)
    x = random_vectors(N, DIM, rng)
    for src, dst in ((10, 20), (150, 250), (30, 31), (31, 32)):
        x[dst] = near_copy(x[src : src + 1], np.array([0.97]), rng)[0]
    sha = [_sha(i) for i in range(N)]
    sha[41] = sha[40]
    phash = rng.integers(0, 2**63, size=N, dtype=np.uint64)
    phash[61] = phash[60]
    phash[71] = phash[70] ^ np.uint64(0b10101)
    score = rng.uniform(0.1, 0.2, N)
    score[20] = 0.9   # the copy has the better caption: it is kept, not the first row
    score[31] = 0.8   # best of the chain
    score[40] = score[41] = 0.5  # tie: the smaller uid wins
    score[250] = np.nan  # failed scoring ranks last
    uids = [uid_of(i) for i in range(N)]
    pool = tmp_path / "pool"
    for k in range(3):
        sl = slice(100 * k, 100 * (k + 1))
        write_shard(pool, "seed", k, x[sl], 100 * k, clip_score=score[sl], sha256=sha[sl],
                    phash=phash[sl], uids=uids[sl])
    return pool, x, np.array(uids, dtype=object)


def _groups(pool: Path, name: str) -> dict:
    return pq.read_table(pool / "dedup" / name / "groups.parquet").to_pydict()


def test_all_methods_group_and_keep_best_scored(planted):
    pool, _, uids = planted
    summary = run_dedup(pool, DedupSettings(scores="seed", phash_bits=4))
    g = _groups(pool, "all")
    assert g["uid"] == uids.tolist()  # one row per scored sample, pool order
    gid = np.array(g["group_id"])
    expected = [{10, 20}, {150, 250}, {30, 31, 32}, {40, 41}, {60, 61}, {70, 71}]
    found = {}
    for i, group in enumerate(gid):
        found.setdefault(group, set()).add(i)
    assert sorted(map(sorted, (s for s in found.values() if len(s) > 1))) == sorted(map(sorted, expected))
    size, keep, method = np.array(g["group_size"]), np.array(g["keep"]), g["method"]
    assert size[30] == 3 and size[0] == 1 and keep[0] and method[0] is None
    kept = {min(s): [i for i in s if keep[i]] for s in expected}
    assert kept[10] == [20] and kept[30] == [31] and kept[150] == [150]
    assert kept[40] == [40 if uids[40] < uids[41] else 41]
    assert method[40] == method[41] == "exact" and method[60] == "phash" and method[71] == "phash"
    assert method[10] == "knn" and gid[20] == 10  # group id: its first member's position
    assert summary["groups"] == 6 and summary["duplicate_samples"] == 13
    assert summary["removed_duplicates"] == 7 and summary["kept"] == N - 7
    assert summary["per_method"]["knn"]["pairs"] == 4 and summary["search"]["knn"]["index"] == "flat"
    assert not np.array(g["contaminated"]).any()


def test_keep_first_and_phash_bits(planted):
    pool, _, _ = planted
    run_dedup(pool, DedupSettings(scores="seed", method="phash", phash_bits=2, keep="first"))
    g = _groups(pool, "phash")
    assert g["group_size"][60] == 2 and g["group_size"][70] == 1  # 3 bits apart > 2
    run_dedup(pool, DedupSettings(scores="seed", method="knn", keep="first", tag="first"))
    g = _groups(pool, "first")
    assert g["keep"][10] and not g["keep"][20] and g["keep"][30] and not g["keep"][31]


def test_ivf_and_semdedup_agree_with_exact_flat(tmp_path):
    pool = tmp_path / "pool"
    pairs = planted_pool(pool, 4000, 64, 80, tag="t", shard_rows=1500, cosine=(0.95, 0.99), clustered=True, seed=2)
    results = {}
    for name, extra in (("flat", dict(index="flat")), ("ivf", dict(index="ivf", nlist=40)),
                        ("sem", dict(method="semdedup", clusters=40))):
        settings = DedupSettings(scores="t", method=extra.pop("method", "knn"), tag=name, threshold=0.95, **extra)
        results[name] = run_dedup(pool, settings)
        results[name]["gid"] = np.array(_groups(pool, name)["group_id"])
    flat, ivf, sem = (results[k]["gid"] for k in ("flat", "ivf", "sem"))
    assert (flat[pairs[:, 0]] == flat[pairs[:, 1]]).all()  # every planted pair is found exactly
    assert (ivf == flat).all()  # 4 probes of 40 cells reproduce exact search here
    assert results["ivf"]["search"]["knn"] == {"index": "ivf", "nlist": 40, "nprobe": 4, "gpu": False}
    assert (sem[pairs[:, 0]] == sem[pairs[:, 1]]).mean() >= 0.9  # one cell, no extra probes
    assert results["sem"]["per_method"]["semdedup"]["pairs"] <= results["flat"]["per_method"]["knn"]["pairs"]


def test_decontamination_marks_and_never_keeps(planted, tmp_path):
    pool, x, _ = planted
    rng = np.random.default_rng(9)
    # 40 and 41 are byte-identical (one group) but their vectors differ: only 40 is near the eval set
    eval_vectors = np.concatenate([near_copy(x[[40, 5]], np.array([0.99, 0.98]), rng), random_vectors(50, DIM, rng)])
    np.save(tmp_path / "eval.npy", eval_vectors.astype(np.float32))
    summary = run_dedup(pool, DedupSettings(scores="seed", against=str(tmp_path / "eval.npy")))
    g = _groups(pool, "all")
    contaminated = np.flatnonzero(g["contaminated"])
    assert contaminated.tolist() == [5, 40]
    assert not g["keep"][40] and not g["keep"][5] and g["keep"][41]  # the group keeps its clean member
    assert summary["contaminated"] == 2 and summary["search"]["against_images"] == 52
    images = tmp_path / "images"
    images.mkdir()
    (images / "a.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(UserError, match="precomputed embeddings"):
        run_dedup(pool, DedupSettings(scores="seed", method="knn", tag="img", against=str(images)))


def test_rerun_skips_other_arguments_need_overwrite(planted):
    pool, _, _ = planted
    first = run_dedup(pool, DedupSettings(scores="seed", method="knn"))
    assert not first["skipped"]
    assert run_dedup(pool, DedupSettings(scores="seed", method="knn"))["skipped"]
    with pytest.raises(UserError, match="--overwrite"):
        run_dedup(pool, DedupSettings(scores="seed", method="knn", threshold=0.9))
    (pool / "dedup" / ".knn.partial-1").mkdir()  # what a killed run leaves
    again = run_dedup(pool, DedupSettings(scores="seed", method="knn", threshold=0.9, overwrite=True))
    assert not again["skipped"] and again["args"]["threshold"] == 0.9
    assert sorted(p.name for p in (pool / "dedup").iterdir()) == ["knn"]


def test_bad_input_is_one_clear_line(planted, tmp_path):
    pool, _, _ = planted
    for settings, message in (
        (DedupSettings(scores="nope"), "available: seed"),
        (DedupSettings(scores="seed", threshold=1.5), r"outside \(0, 1\]"),
        (DedupSettings(scores="seed", method="fuzzy"), "not one of"),
        (DedupSettings(scores="seed", clusters=5), "semdedup only"),
    ):
        with pytest.raises(UserError, match=message):
            run_dedup(pool, settings)
    (pool / "embeddings" / "seed" / "00001.npy").unlink()
    with pytest.raises(UserError, match="no embeddings for shard 00001"):
        run_dedup(pool, DedupSettings(scores="seed", method="semdedup"))
    assert run_dedup(pool, DedupSettings(scores="seed", method="exact"))["groups"] == 1  # hashes need no vectors
    cli = subprocess.run([sys.executable, "-m", "curate", "dedup", str(pool), "--scores", "seed", "--method", "knn"],
                         capture_output=True, text=True, cwd=ROOT)
    assert cli.returncode == 2 and cli.stderr.count("\n") == 1 and "Traceback" not in cli.stderr
    assert "no embeddings for shard 00001" in cli.stderr


def test_pair_quality_against_truth(planted, tmp_path):
    pool, _, uids = planted
    run_dedup(pool, DedupSettings(scores="seed"))
    # truth: 10/20 near, 30/31/32 near, 40/41 exact copy, 60/61 exact; 70/71 were never a pair;
    # 150/250 is a duplicate the truth does not list (a false positive); 90/91 are missed.
    rows = []
    for i, uid in enumerate(uids):
        kind, group = "clean", None
        for g, (members, copy_kind) in enumerate((((10, 20), "dup-near"), ((30, 31, 32), "dup-near"),
                                                   ((40, 41), "dup-exact"), ((60, 61), "dup-exact"),
                                                   ((90, 91), "dup-near"))):
            if i in members:
                group, kind = g, (copy_kind if i != members[0] else "clean")
        rows.append({"uid": uid, "url": f"http://x/{i}", "caption": "c", "kind": kind, "dup_group": group,
                     "label": "l", "expect": "keep"})
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "truth.parquet")
    q = pair_quality(pool / "dedup" / "all" / "groups.parquet", tmp_path / "truth.parquet")
    assert q["exact"] == {"true_pairs": 2, "found_pairs": 1, "precision": 1.0, "recall": 1.0}
    # near truth: 10-20, 30-31, 30-32, 31-32, 90-91 (5); found near-type pairs: those + 60-61 (phash),
    # 70-71, 150-250 -> 4 true of 7 found
    assert q["near"]["true_pairs"] == 5 and q["near"]["recall"] == 0.8
    assert q["near"]["found_pairs"] == 7 and q["near"]["precision"] == round(5 / 7, 4)
    assert q["kept"]["groups_judged"] == 4 and q["kept"]["one_kept"] == 1.0
    keep = _groups(pool, "all")["keep"]
    originals = sum(keep[first] for first in (10, 30, 40, 60))  # 20 and 31 (copies) outscore theirs
    assert q["kept"]["best_score_kept"] == 1.0 and q["kept"]["original_kept"] == originals / 4 <= 0.5
    json.dumps(q)
