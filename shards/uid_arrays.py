"""uids as arrays: DataComp (high, low) uint64 pairs, and a subset as a sorted pair array.

A subset or a pool can hold 10M-100M uids; a Python str or a frozenset entry per uid costs
~80-100 bytes, a pair 16. So the stages that ask "is this sample in the subset?" (export;
training, which reads subsets the same way) decode the uid column of each Arrow batch into
pairs (binascii, at C speed) and look them up by binary search in the subset's sorted
pairs, never building a Python object per uid.

Only the canonical spelling counts as a member: 32 lowercase hex characters, the form
every subset file is written in (curate/filter/subsets.py). A pool uid spelt otherwise
(uppercase, another length, null) matches nothing, as a string comparison would have it.
"""
from __future__ import annotations

import binascii
from typing import TYPE_CHECKING, Iterable

import numpy as np

from shards.storage import StoragePath, as_path, parquet_file
from shards.uid import UID_HEX_CHARS

if TYPE_CHECKING:
    import pyarrow as pa

UID_PAIR = np.dtype("u8,u8")  # exactly what DataComp's baselines np.save
_HEX = np.zeros(256, dtype=bool)
_HEX[np.frombuffer(b"0123456789abcdef", np.uint8)] = True
_LOWER_BITS = 0x2020202020202020


def pairs_from_hex(text: bytes | memoryview, n: int) -> np.ndarray:
    """n uids given as 32n hex characters back to back -> their (high, low) pairs.

    Raises binascii.Error on a non-hex character."""
    halves = np.frombuffer(binascii.unhexlify(text), dtype=">u8").reshape(n, 2)  # big-endian halves
    pairs = np.empty(n, UID_PAIR)
    pairs["f0"], pairs["f1"] = halves[:, 0], halves[:, 1]
    return pairs


def _string_offsets(chunk: pa.Array) -> tuple[np.ndarray, memoryview]:
    _, offsets_buf, data_buf = chunk.buffers()
    width = np.int64 if chunk.type in _large_types() else np.int32
    offsets = np.frombuffer(offsets_buf, dtype=width, count=len(chunk) + 1,
                            offset=chunk.offset * np.dtype(width).itemsize).astype(np.int64)
    return offsets, memoryview(data_buf) if data_buf is not None else memoryview(b"")


def _large_types():
    import pyarrow as pa

    return (pa.large_string(), pa.large_binary())


def canonical_pairs(chunk: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """One Arrow string array -> (pairs, valid): valid rows are 32 lowercase hex characters
    (a canonical uid); the pairs of other rows are zero."""
    import pyarrow as pa

    n = len(chunk)
    pairs = np.zeros(n, UID_PAIR)
    if n == 0:
        return pairs, np.zeros(0, dtype=bool)
    if chunk.type not in (pa.string(), pa.large_string()):
        chunk = chunk.cast(pa.large_string())
    offsets, data = _string_offsets(chunk)
    valid = np.diff(offsets) == UID_HEX_CHARS
    if chunk.null_count:
        valid &= chunk.is_valid().to_numpy(zero_copy_only=False)
    first = int(offsets[0])
    if valid.all() and int(offsets[-1]) - first == UID_HEX_CHARS * n:
        raw = data[first : first + UID_HEX_CHARS * n]  # fixed width: decode in one call
        words = np.frombuffer(raw, dtype=np.uint64)
        if int(np.bitwise_and.reduce(words)) & _LOWER_BITS == _LOWER_BITS:  # no uppercase letter
            try:
                return pairs_from_hex(raw, n), valid
            except binascii.Error:
                pass  # some row is not hex: find which, below
    rows = np.flatnonzero(valid)
    if rows.size:
        starts = offsets[rows]
        text = np.frombuffer(data, dtype=np.uint8)[starts[:, None] + np.arange(UID_HEX_CHARS)]
        ok = _HEX[text].all(axis=1)
        rows = rows[ok]
        valid[:] = False
        valid[rows] = True
        if rows.size:
            pairs[rows] = pairs_from_hex(np.ascontiguousarray(text[ok]).tobytes(), rows.size)
    return pairs, valid


def _chunks(uids) -> Iterable[pa.Array]:
    import pyarrow as pa

    if isinstance(uids, pa.ChunkedArray):
        return uids.chunks
    return [uids]


class SortedUids:
    """A set of uids as sorted, unique (high, low) pairs: 16 bytes a uid."""

    def __init__(self, pairs: np.ndarray):
        if len(pairs) > 1:
            hi, lo = pairs["f0"], pairs["f1"]
            ordered = (hi[1:] > hi[:-1]) | ((hi[1:] == hi[:-1]) & (lo[1:] > lo[:-1]))
            if not ordered.all():  # not a subset file's order, or repeats: sort and drop them
                pairs = pairs[np.lexsort((lo, hi))]
                fresh = np.r_[True, (pairs["f0"][1:] != pairs["f0"][:-1]) | (pairs["f1"][1:] != pairs["f1"][:-1])]
                pairs = pairs[fresh]
        self.pairs = pairs
        hi = pairs["f0"]
        # rows whose high half repeats: the only ones the high half alone cannot place
        self._shared_high = np.zeros(len(pairs), dtype=bool)
        if len(pairs) > 1:
            same = hi[1:] == hi[:-1]
            self._shared_high[1:] |= same
            self._shared_high[:-1] |= same

    def __len__(self) -> int:
        return len(self.pairs)

    def __contains__(self, uid: object) -> bool:
        """Whether one uid string is a member (a training stream asks this per sample)."""
        if not isinstance(uid, str) or len(uid) != UID_HEX_CHARS:
            return False
        try:
            pair = pairs_from_hex(uid.encode("ascii"), 1)
        except (binascii.Error, UnicodeEncodeError, ValueError):
            return False
        return uid == uid.lower() and bool(self.positions(pair)[0] >= 0)

    @classmethod
    def from_arrow(cls, uids: pa.Array | pa.ChunkedArray) -> SortedUids:
        """The canonical uids of a string array (others are dropped: they are no subset's)."""
        parts = []
        for chunk in _chunks(uids):
            pairs, valid = canonical_pairs(chunk)
            parts.append(pairs[valid])
        return cls(np.concatenate(parts) if parts else np.zeros(0, UID_PAIR))

    @classmethod
    def from_parquet(cls, path: str | StoragePath, column: str = "uid", batch_rows: int = 1 << 20) -> SortedUids:
        """The uids of a parquet column, read batch by batch (a subset file: already sorted)."""
        parts = []
        with parquet_file(as_path(path)) as handle:
            for batch in handle.iter_batches(batch_size=batch_rows, columns=[column]):
                pairs, valid = canonical_pairs(batch.column(0))
                parts.append(pairs[valid])
        return cls(np.concatenate(parts) if parts else np.zeros(0, UID_PAIR))

    def positions(self, pairs: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
        """Each pair's index in the set, -1 where it is not a member (or not `valid`)."""
        out = np.full(len(pairs), -1, dtype=np.int64)
        if len(self.pairs) == 0 or len(pairs) == 0:
            return out
        hi, lo = self.pairs["f0"], self.pairs["f1"]
        order = np.argsort(pairs["f0"])  # sorted needles: binary search starts where the last ended (10x here)
        at = np.empty(len(pairs), dtype=np.int64)
        at[order] = np.minimum(np.searchsorted(hi, pairs["f0"][order]), len(hi) - 1)
        hit = (hi[at] == pairs["f0"]) & (lo[at] == pairs["f1"])
        shared = (hi[at] == pairs["f0"]) & self._shared_high[at] & ~hit
        if shared.any():  # a high half shared by several members: search the full pairs
            rows = np.flatnonzero(shared)
            exact = np.minimum(np.searchsorted(self.pairs, pairs[rows]), len(hi) - 1)
            found = (hi[exact] == pairs["f0"][rows]) & (lo[exact] == pairs["f1"][rows])
            at[rows[found]] = exact[found]
            hit[rows[found]] = True
        if valid is not None:
            hit &= valid
        out[hit] = at[hit]
        return out
