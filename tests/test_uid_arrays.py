"""shards/uid_arrays.py: uids decoded into (high, low) pairs without a Python object per
uid, and membership in a sorted uid array (how export, and later training, read subsets)."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from shards.uid import sample_uid, uid_to_uint64_pair
from shards.uid_arrays import UID_PAIR, SortedUids, canonical_pairs


def _pairs(uids: list[str]) -> np.ndarray:
    out = np.zeros(len(uids), UID_PAIR)
    for i, uid in enumerate(uids):
        out[i] = uid_to_uint64_pair(uid)
    return out


def test_only_canonical_uids_decode():
    good = [sample_uid(f"http://x/{i}", "c") for i in range(5)]
    chunk = pa.array([good[0], good[1].upper(), None, good[2][:31], good[3][:31] + "g", good[4], "", good[2]])
    pairs, valid = canonical_pairs(chunk)
    assert valid.tolist() == [True, False, False, False, False, True, False, True]
    assert pairs[valid].tolist() == _pairs([good[0], good[4], good[2]]).tolist()
    # the fast path (one fixed-width block) gives the same pairs, on a sliced chunk too
    fixed = pa.array(good).slice(1, 3)
    pairs, valid = canonical_pairs(fixed)
    assert valid.all() and pairs.tolist() == _pairs(good[1:4]).tolist()
    pairs, valid = canonical_pairs(pa.array([good[0], good[1].upper()], pa.large_string()))
    assert valid.tolist() == [True, False]


def test_membership_by_sorted_pairs(tmp_path):
    rng = np.random.default_rng(0)
    # random 128-bit uids (high halves distinct: placed by the high half alone), and uids
    # below 2^62 (high half zero: all share it)
    members = [rng.bytes(16).hex() for _ in range(2000)] + [f"{int(x):032x}" for x in rng.integers(0, 2**62, 200)]
    # several members share a high half: the high half alone cannot place them
    members += ["00000000000000aa" + f"{i:016x}" for i in (9, 3, 7)]
    path = tmp_path / "subset.parquet"
    pq.write_table(pa.table({"uid": sorted(members)}), path)
    subset = SortedUids.from_parquet(path, batch_rows=500)
    assert len(subset) == len(set(members))
    others = ([rng.bytes(16).hex() for _ in range(500)] + [f"{int(x):032x}" for x in rng.integers(0, 2**62, 100)]
              + ["00000000000000aa" + f"{5:016x}"])
    queries = members[::3] + others + [members[1].upper()]
    pairs, valid = canonical_pairs(pa.array(queries))
    got = subset.positions(pairs, valid)
    ordered = sorted(set(members))
    expected = [ordered.index(q) if q in set(members) else -1 for q in queries]
    assert got.tolist() == expected
    # one uid string at a time, as a training stream asks
    assert [q in subset for q in queries] == [e >= 0 for e in expected]
    assert None not in subset and "not-a-uid" not in subset and members[0][:-1] + "g" not in subset
    # unsorted input with repeats is sorted and made unique
    shuffled = SortedUids.from_arrow(pa.chunked_array([pa.array(members[::-1]), pa.array(members[:10])]))
    assert shuffled.pairs.tolist() == subset.pairs.tolist()
