"""The dedup Method records (curate/dedup/methods.py): each method's documented defaults,
its place in `all`, and that a run reads only the inputs its records say it needs."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from clikit.errors import UserError
from curate.dedup.methods import METHODS
from curate.dedup.run import DedupSettings, run_dedup
from curate.dedup.settings import parse_methods
from shards.layout import Pool
from synthetic_embeddings import random_vectors, write_shard

# docs/design.md, Dedup: what each method runs with when --threshold / --phash-bits are left
# out, in the order methods run (exact first, so a byte copy is labelled exact).
DOCUMENTED = {
    "exact": {},
    "phash": {"phash_bits": 4},
    "phash-pixels": {"phash_bits": 6, "threshold": 0.98},
    "phash-knn": {"phash_bits": 6, "threshold": "auto"},
    "knn": {"threshold": 0.95},
    "semdedup": {"threshold": 0.95},
}


def test_each_method_runs_with_its_documented_defaults_in_the_documented_order():
    assert tuple(METHODS) == tuple(DOCUMENTED)
    for name, defaults in DOCUMENTED.items():
        assert DedupSettings(scores="s", method=name).resolved() == {name: defaults}, name
    given = DedupSettings(scores="s", method="all,semdedup,phash-pixels", threshold=0.9, phash_bits=3, against="x")
    assert given.resolved() == {"exact": {}, "phash": {"phash_bits": 3}, "phash-pixels": {"phash_bits": 3, "threshold": 0.9},
                                "knn": {"threshold": 0.9}, "semdedup": {"threshold": 0.9}, "against": {"threshold": 0.9}}
    assert DedupSettings(scores="s", method="exact", against="x").resolved()["against"] == {"threshold": 0.95}
    assert parse_methods("all") == ("exact", "phash", "knn")  # semdedup is knn's alternative
    assert parse_methods("knn, exact,knn") == ("exact", "knn")
    with pytest.raises(UserError, match="'nope' is not one of exact, phash, phash-pixels, phash-knn, knn, semdedup, all"):
        parse_methods("exact,nope")


@pytest.fixture
def pool_without_embeddings(tmp_path):
    """A scored pool (two byte copies, two equal hashes) whose embeddings/ and pixel
    thumbnails are missing: only methods that need neither can run on it."""
    n = 40
    vectors = random_vectors(n, 8, np.random.default_rng(0))
    sha = [f"{i:064x}" for i in range(n)]
    sha[3] = sha[2]
    phash = np.random.default_rng(1).integers(0, 2**63, n, dtype=np.uint64)
    phash[7] = phash[6]
    pool = tmp_path / "pool"
    write_shard(pool, "seed", 0, vectors, 0, sha256=sha, phash=phash)
    shutil.rmtree(Pool(pool).embeddings_dir("seed"))
    return pool


def test_a_run_reads_only_what_its_methods_records_need(pool_without_embeddings):
    pool = pool_without_embeddings
    summary = run_dedup(pool, DedupSettings(scores="seed", method="exact,phash"))
    assert {m: v["pairs"] for m, v in summary["per_method"].items()} == {"exact": 1, "phash": 1}
    assert summary["per_method"]["phash"]["phash_bits"] == 4
    for name in ("knn", "semdedup", "phash-knn"):
        with pytest.raises(UserError, match="no embeddings for shard"):
            run_dedup(pool, DedupSettings(scores="seed", method=f"exact,{name}"))
    with pytest.raises(UserError, match="has no pixel thumbnails"):
        run_dedup(pool, DedupSettings(scores="seed", method="exact,phash-pixels"))
    with pytest.raises(UserError, match="no embeddings for shard"):  # --against compares embeddings too
        run_dedup(pool, DedupSettings(scores="seed", method="exact", tag="decontam", against=str(pool / "x.npy")))
