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

from curate.truth.dedup import pair_quality
from curate.dedup.run import DedupSettings, run_dedup
from synthetic_embeddings import near_copy, planted_pool, random_vectors, uid_of, write_shard
from clikit.errors import UserError

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
    summary = run_dedup(pool, DedupSettings(scores="seed", method="all", phash_bits=4))
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
    summary = run_dedup(pool, DedupSettings(scores="seed", method="all", against=str(tmp_path / "eval.npy")))
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
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "text.npy").write_bytes(b"not numpy")
    np.save(bad / "dim.npy", np.zeros((3, DIM + 1), np.float16))
    np.save(bad / "ints.npy", np.zeros((3, DIM), np.int64))
    for name, message in (("text.npy", "not a readable .npy"), ("dim.npy", rf"expected float \(n, {DIM}\)"),
                          ("ints.npy", "int64")):
        with pytest.raises(UserError, match=message):
            run_dedup(pool, DedupSettings(scores="seed", method="knn", against=str(bad / name)))
    shard = pool / "embeddings" / "seed" / "00001.npy"
    rows = np.load(shard)
    np.save(shard, rows[:-1])  # one row short of its parquet
    with pytest.raises(UserError, match=r"00001.npy holds .*rerun `curate score` to match 00001.parquet"):
        run_dedup(pool, DedupSettings(scores="seed", method="knn"))
    shard.unlink()
    with pytest.raises(UserError, match="no embeddings for shard 00001"):
        run_dedup(pool, DedupSettings(scores="seed", method="semdedup"))
    assert run_dedup(pool, DedupSettings(scores="seed", method="exact"))["groups"] == 1  # hashes need no vectors
    cli = subprocess.run([sys.executable, "-m", "curate", "dedup", str(pool), "--scores", "seed", "--method", "knn"],
                         capture_output=True, text=True, cwd=ROOT)
    assert cli.returncode == 2 and cli.stderr.count("\n") == 1 and "Traceback" not in cli.stderr
    assert "no embeddings for shard 00001" in cli.stderr


def test_pair_quality_against_truth(planted, tmp_path):
    pool, _, uids = planted
    run_dedup(pool, DedupSettings(scores="seed", method="all"))
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
    lines = q["text"].splitlines()  # what the quickstart prints
    assert len(lines) == 2
    assert "exact P 1.00 R 1.00 (1 found, 2 true)" in lines[0] and "near P 0.71 R 0.80 (7 found, 5 true)" in lines[0]
    assert "100% of 4 found groups" in lines[1] and "best clip_score 100%" in lines[1]


def _flip(h: np.uint64, bits: int) -> np.uint64:
    """A hash `bits` bits away from h."""
    return h ^ np.uint64((1 << bits) - 1)


@pytest.fixture
def lookalikes(tmp_path):
    """300 rows in 3 shards where each signal alone is fooled (cosines are exact, then stored
    as float16 like `curate score` does):
    - 10~11: phash 6 bits apart, cosine 0.30 (different pictures on one flat ground): phash only
    - 20~21: phash far apart, cosine 0.97 (look-alikes under a weak model): knn only
    - 30~31: phash 6 bits, cosine 0.92 (a re-encoded copy): both agree -> joined
    - 40~41: identical phash, cosine 0.85 (a recolour): joined, identical hashes need 0.8
    - 50~51: identical phash, cosine 0.50: not joined
    - 60~61: phash 8 bits, cosine 0.88: not joined (0.9 needed at the largest distance)
    - 70, 71, 72 share one phash; only 71~72 agree (0.95): a star from 70 would miss it
    - 100..139 (40 rows across shards 1) share one phash (blank images): only 105~133 agree
    - 150 = 151 byte copies (their vectors differ too much for knn)."""
    rng = np.random.default_rng(5)
    x = random_vectors(N, DIM, rng)
    phash = rng.integers(0, 2**63, size=N, dtype=np.uint64)
    for (i, j), cos, bits in (((10, 11), 0.30, 6), ((20, 21), 0.97, None), ((30, 31), 0.92, 6),
                              ((40, 41), 0.85, 0), ((50, 51), 0.50, 0), ((60, 61), 0.88, 8),
                              ((71, 72), 0.95, None), ((105, 133), 0.99, None), ((150, 151), 0.5, None)):
        x[j] = near_copy(x[i : i + 1], np.array([cos]), rng)[0]
        if bits is not None:
            phash[j] = _flip(phash[i], bits)
    phash[[71, 72]] = phash[70]
    phash[100:140] = phash[100]
    sha = [_sha(i) for i in range(N)]
    sha[151] = sha[150]
    pool = tmp_path / "pool"
    for k in range(3):
        sl = slice(100 * k, 100 * (k + 1))
        write_shard(pool, "seed", k, x[sl], 100 * k, sha256=sha[sl], phash=phash[sl])
    return pool, phash


def _joined(pool: Path, name: str) -> set:
    gid = np.array(_groups(pool, name)["group_id"])
    return {frozenset(np.flatnonzero(gid == g).tolist()) for g in np.unique(gid) if (gid == g).sum() > 1}


def test_phash_knn_needs_both_signals(lookalikes):
    pool, _ = lookalikes
    run_dedup(pool, DedupSettings(scores="seed", method="phash", phash_bits=8, tag="phash8"))
    run_dedup(pool, DedupSettings(scores="seed", method="knn"))
    summary = run_dedup(pool, DedupSettings(scores="seed", method="phash-knn", phash_bits=8, threshold=0.9))
    phash_only, knn_only, both = _joined(pool, "phash8"), _joined(pool, "knn"), _joined(pool, "phash-knn")
    assert {10, 11} in phash_only and {50, 51} in phash_only  # flat grounds fool the hash
    assert {20, 21} in knn_only and {30, 31} not in knn_only  # look-alikes fool the embedding; a copy at 0.92 is missed
    assert both == {frozenset(s) for s in ({30, 31}, {40, 41}, {71, 72}, {105, 133})}
    assert summary["search"]["phash-knn"]["phash_bits"] == 8 and summary["search"]["phash-knn"]["threshold"] == 0.9
    assert summary["per_method"]["phash-knn"]["pairs"] == 4
    # candidates: 10-11, 30-31, 40-41, 50-51, 60-61, 3 inside 70-72, 780 inside 100-139
    assert summary["search"]["phash-knn"]["candidates"] == 5 + 3 + 40 * 39 // 2
    # --threshold moves the whole bar: 0.96 at 8 bits, 0.935 at 6 (> 0.92), 0.86 at 0 (> 0.85)
    strict = run_dedup(pool, DedupSettings(scores="seed", method="phash-knn", phash_bits=8, threshold=0.96, tag="strict"))
    assert _joined(pool, "strict") == {frozenset(s) for s in ({71, 72}, {105, 133})}
    assert strict["per_method"]["phash-knn"]["threshold"] == 0.96


def test_phash_knn_matches_brute_force(lookalikes):
    """Every pair within the Hamming bound whose cosine meets the bar for its distance, and no other."""
    from curate.dedup.phash_knn import cosine_bar, hamming, phash_knn_pairs
    from curate.dedup.scored_pool import gather_rows, open_scored_pool, read_score_columns

    pool, _ = lookalikes
    scored = open_scored_pool(pool, "seed")
    cols = read_score_columns(scored)
    v = gather_rows(scored, np.arange(scored.size))
    for bits, threshold in ((8, 0.9), (6, 0.8), (0, 0.9)):
        (a, b), counts = phash_knn_pairs(scored, cols.phash, cols.phash_valid, bits, threshold)
        found = {(min(p), max(p)) for p in zip(a.tolist(), b.tolist())}
        assert len(found) == a.size == counts["confirmed"]  # each pair reported once
        i, j = np.triu_indices(N, 1)
        d = hamming(cols.phash[i], cols.phash[j])
        ok = (d <= bits) & (np.einsum("ij,ij->i", v[i], v[j]) >= cosine_bar(d, bits, threshold) - 2e-4)
        assert found == set(zip(i[ok].tolist(), j[ok].tolist()))
        assert counts["candidates"] == int((d <= bits).sum())


def test_method_lists_label_exact_first(lookalikes):
    pool, _ = lookalikes
    summary = run_dedup(pool, DedupSettings(scores="seed", method="phash-knn, exact"))
    assert summary["name"] == "exact+phash-knn"
    assert DedupSettings(scores="seed").name == "exact+phash-pixels"  # the default
    g = _groups(pool, "exact+phash-knn")
    assert g["method"][150] == g["method"][151] == "exact" and g["method"][71] == g["method"][72] == "phash-knn"
    assert list(summary["per_method"]) == ["exact", "phash-knn"]
    assert summary["args"]["resolved"] == {"exact": {}, "phash-knn": {"phash_bits": 6, "threshold": "auto"}}
    # Random hashes give too few hard negatives (12-20 bits apart) to measure: the fixed bar.
    measured = summary["search"]["phash-knn"]
    assert measured["threshold"] == 0.95 and "fallback" in measured["calibration"]
    combined = run_dedup(pool, DedupSettings(scores="seed", method="all,semdedup", tag="every"))
    assert list(combined["per_method"]) == ["exact", "phash", "knn", "semdedup"]
    assert combined["args"]["resolved"]["phash"] == {"phash_bits": 4}
    with pytest.raises(UserError, match="'fuzzy' is not one of"):
        run_dedup(pool, DedupSettings(scores="seed", method="exact,fuzzy"))
    with pytest.raises(UserError, match="names no method"):
        run_dedup(pool, DedupSettings(scores="seed", method=" , "))
    cli = subprocess.run([sys.executable, "-m", "curate", "dedup", str(pool), "--scores", "seed", "--method",
                          "exact,phash-knn", "--quiet"], capture_output=True, text=True, cwd=ROOT)
    assert cli.returncode == 0 and "up to date" in cli.stdout  # the CLI's run is the library's
    # The CLI default is the library's too: phash-pixels, which these synthetic scores lack the thumbnails for.
    cli = subprocess.run([sys.executable, "-m", "curate", "dedup", str(pool), "--scores", "seed", "--quiet"],
                         capture_output=True, text=True, cwd=ROOT)
    assert cli.returncode == 2 and "has no pixel thumbnails" in cli.stderr


def test_hash_search_finds_every_pair_within_the_bound():
    """Both Hamming searches against brute force: FAISS multi-index hashing with 1, 2 or 3 bit
    flips per chunk, and the block sort used past MULTIHASH_MAX hashes with its planned
    number of blocks and with others forced."""
    from curate.dedup.hashes import block_sorted_pairs, near_hash_values
    from curate.dedup.phash_knn import hamming

    rng = np.random.default_rng(11)
    base = rng.integers(0, 2**63, size=600, dtype=np.uint64) * np.uint64(2) + rng.integers(0, 2, 600, dtype=np.uint64)
    near = []
    for d in range(1, 14):  # neighbours at every distance, bits anywhere in the 64
        for h in base[:30]:
            bits = rng.choice(64, size=d, replace=False)
            near.append(h ^ np.uint64(sum(1 << int(b) for b in bits)))
    values = np.unique(np.concatenate([base, np.array(near, dtype=np.uint64)]))
    i, j = np.triu_indices(values.size, 1)
    d = hamming(values[i], values[j])
    for max_bits in (1, 4, 8, 12):
        truth = set(zip(i[d <= max_bits].tolist(), j[d <= max_bits].tolist()))
        assert len(truth) >= 30 * max_bits
        for flips in (None, 1, 2, 3):
            a, b = near_hash_values(values, max_bits, flips=flips)
            assert set(zip(a.tolist(), b.tolist())) == truth and a.size == len(truth), (max_bits, flips)
        for blocks in (None, max_bits + 1, max_bits + 3):
            a, b = block_sorted_pairs(values, max_bits, blocks)
            assert set(zip(a.tolist(), b.tolist())) == truth and a.size == len(truth), (max_bits, blocks)


@pytest.fixture
def chained(tmp_path):
    """300 rows: 70 rows (100..169) form a chain, each a cos-0.97 copy of the previous (a
    runaway near group: the ends are nothing alike), 100 = 101 byte copies inside it, and one
    honest near pair 10~20."""
    rng = np.random.default_rng(11)
    x = random_vectors(N, DIM, rng)
    for i in range(100, 169):
        x[i + 1] = near_copy(x[i : i + 1], np.array([0.97]), rng)[0]
    x[20] = near_copy(x[10:11], np.array([0.97]), rng)[0]
    sha = [_sha(i) for i in range(N)]
    sha[101] = sha[100]
    pool = tmp_path / "pool"
    for k in range(3):
        sl = slice(100 * k, 100 * (k + 1))
        write_shard(pool, "seed", k, x[sl], 100 * k, sha256=sha[sl])
    return pool


def test_runaway_groups_are_split_and_reported(chained):
    pool = chained
    summary = run_dedup(pool, DedupSettings(scores="seed", method="exact,knn", tag="guarded"))
    assert summary["max_group"] == 50  # 1% of 300 is below the floor of 50
    assert summary["oversized_groups"] == [{"size": 70, "methods": ["exact", "knn"], "split": True}]
    gid = np.array(_groups(pool, "guarded")["group_id"])
    sizes = np.bincount(np.unique(gid, return_inverse=True)[1])
    assert sizes.max() == 2  # the chain is gone; the byte copies 100 = 101 and 10~20 stay grouped
    assert gid[100] == gid[101] and gid[10] == gid[20] and gid[102] != gid[103]
    loose = run_dedup(pool, DedupSettings(scores="seed", method="exact,knn", tag="loose", max_group=100))
    assert loose["oversized_groups"] == [] and loose["duplicate_samples"] == 72
    with pytest.raises(UserError, match="--max-group 1 must be at least 2"):
        run_dedup(pool, DedupSettings(scores="seed", method="knn", tag="x", max_group=1))


def test_cli_warns_of_runaway_groups_and_prints_a_threshold_table(chained, tmp_path):
    pool = chained
    uids = [uid_of(i) for i in range(N)]
    rows = [{"uid": u, "kind": "dup-near" if i == 20 else "dup-exact" if i == 101 else "clean",
             "dup_group": 0 if i in (10, 20) else 1 if i in (100, 101) else None} for i, u in enumerate(uids)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "truth.parquet")
    cli = subprocess.run([sys.executable, "-m", "curate", "dedup", str(pool), "--scores", "seed", "--method",
                          "exact,knn", "--quiet", "--truth", str(tmp_path / "truth.parquet")],
                         capture_output=True, text=True, cwd=ROOT)
    assert cli.returncode == 0, cli.stderr
    assert "warning: a duplicate group of 70 samples (joined by exact, knn) is over --max-group 50" in cli.stderr
    lines = cli.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("threshold"))
    table = {float(line.split()[0]): line.split() for line in lines[header + 1:]}
    assert sorted(table) == [0.85, 0.9, 0.93, 0.95, 0.97]
    # After the guard only the two true pairs are left at every threshold up to 0.95.
    assert table[0.95][1:3] == ["1.00", "1.00"] and table[0.95][5:7] == ["2", "2"]
    assert "dedup pairs: exact P 1.00 R 1.00" in cli.stdout
    bad = subprocess.run([sys.executable, "-m", "curate", "dedup", str(pool), "--scores", "seed", "--truth",
                          str(tmp_path / "missing.parquet")], capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 2 and "--truth" in bad.stderr and bad.stderr.count("\n") == 1


def test_phash_knn_bar_is_measured_on_hard_negatives(tmp_path):
    """Two hash values 14 bits apart: every cross pair is a hard negative, so the measured bar
    is their 99.9th percentile cosine + 0.02; a copy above it is joined, a look-alike is not."""
    rng = np.random.default_rng(8)
    x = random_vectors(N, DIM, rng, clustered=True)
    x[1] = near_copy(x[0:1], np.array([0.999]), rng)[0]
    phash = np.full(N, np.uint64(0x0F0F_0F0F_0F0F_0F0F))
    phash[N // 2:] = _flip(phash[0], 14)
    pool = tmp_path / "pool"
    for k in range(3):
        sl = slice(100 * k, 100 * (k + 1))
        write_shard(pool, "seed", k, x[sl], 100 * k, phash=phash[sl])
    summary = run_dedup(pool, DedupSettings(scores="seed", method="phash-knn"))
    stored = np.concatenate([np.load(pool / "embeddings" / "seed" / f"{k:05d}.npy") for k in range(3)]).astype(np.float32)
    stored /= np.linalg.norm(stored, axis=1, keepdims=True)
    cross = (stored[: N // 2] @ stored[N // 2:].T).ravel()
    expected = round(float(np.quantile(np.concatenate([cross, cross]), 0.999)) + 0.02, 4)
    measured = summary["search"]["phash-knn"]
    assert measured["calibration"]["pairs"] == 2 * (N // 2) ** 2 and "fallback" not in measured["calibration"]
    assert measured["threshold"] == pytest.approx(min(expected, 0.999), abs=2e-4)
    gid = _groups(pool, "phash-knn")["group_id"]
    assert gid[0] == gid[1]  # the copy clears the bar


def _thumbnail_row(grey: np.ndarray, colour: tuple[int, int, int]) -> dict:
    """A scores row's pixel columns: a 16x16 grey thumbnail and a uniform 4x4 colour grid."""
    return {"pixels": np.clip(np.round(grey), 0, 255).astype(np.uint8).tobytes(),
            "colours": bytes(colour) * 16}


def test_phash_pixels_confirms_copies_by_their_thumbnails(tmp_path):
    """Six rows with one phash (all candidates of each other); known answer: the copy whose
    thumbnail is brighter, lower in contrast and a little noisy, and two flat pictures of
    one colour, are the only pairs. A different picture of the same colour fails the
    correlation, and the same picture tinted otherwise fails the colour grid."""
    from curate.dedup.phash_pixels import phash_pixels_pairs
    from curate.dedup.scored_pool import ScoredPool
    from shards.layout import Pool

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:16, 0:16]
    boot = 60 + 120 * ((xx - 8) ** 2 + (yy - 9) ** 2 < 30)  # a shape on a ground
    other = 60 + 120 * (np.abs(xx - yy) < 4)  # another shape, same grey levels
    blue, pink = (40, 60, 200), (220, 90, 160)
    rows = [_thumbnail_row(boot, blue),                                             # 0
            _thumbnail_row(1.08 * boot * 0.9 + 20 + rng.normal(0, 2, boot.shape), (44, 64, 204)),  # 1: copy of 0
            _thumbnail_row(other, blue),                                            # 2: look-alike colour
            _thumbnail_row(boot, pink),                                             # 3: same shape, other tint
            _thumbnail_row(np.full((16, 16), 200.0), (250, 250, 250)),              # 4: blank
            _thumbnail_row(np.full((16, 16), 201.0), (251, 251, 251))]              # 5: blank, re-encoded
    layout = Pool(tmp_path / "pool")
    path = layout.scores_parquet("t", "00000")
    path.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=pa.schema([("pixels", pa.binary(256)), ("colours", pa.binary(48))])),
                   path)
    scored = ScoredPool(tmp_path / "pool", "t", ("00000",), (6,), (0,))
    phash = np.full(6, 12345, dtype=np.uint64)
    (a, b), counts = phash_pixels_pairs(scored, phash, np.ones(6, bool), 6, 0.98)
    assert sorted(zip(a.tolist(), b.tolist())) == [(0, 1), (4, 5)]
    assert counts["candidates"] == 15 and counts["colour_rejected"] == 2  # 0-3 and 1-3 correlate, differ in colour
    (a, b), _ = phash_pixels_pairs(scored, phash, np.array([True, False, True, True, True, True]), 6, 0.98)
    assert sorted(zip(a.tolist(), b.tolist())) == [(4, 5)]  # a row without an image is never a candidate


def test_phash_pixels_refuses_scores_without_thumbnails(planted):
    """Scores written before the pixel columns existed: one line saying how to get them."""
    pool = planted[0]
    with pytest.raises(UserError, match=r"has no pixel thumbnails \(scored by an older clipcurate\); rerun `curate score`"):
        run_dedup(pool, DedupSettings(scores="seed"))
