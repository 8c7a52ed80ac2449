"""128-bit hex uids as fixed-width bytes and DataComp (high, low) uint64 pairs, fast.

A subset can hold tens of millions of uids, so everything here is vectorised numpy over
arrow's contiguous string buffers: no Python object per uid.

- `UidBlock`: uids decoded out of arrow's buffers into pairs, chunk by chunk, so a
  query's result can be streamed in and each arrow batch freed at once (binascii
  decodes the hex at C speed). The text is
  spelt again from the sorted pairs when written (cheaper than keeping and permuting it).
- `pairs_to_text`, `text_to_arrow`, `pairs_to_uids`: the way back, lowercase hex spelt by
  one table lookup per two bytes.
- `sorted_order`: the permutation that sorts pairs by (high, low), using numpy's SIMD
  `np.sort` on one uint64 key instead of the much slower `argsort`/`lexsort`.
"""
from __future__ import annotations

import binascii
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from shards.uid_arrays import UID_PAIR, pairs_from_hex

if TYPE_CHECKING:
    import pyarrow as pa

DATACOMP_UID_DTYPE = UID_PAIR  # exactly what DataComp's baselines np.save
UID_CHARS = 32
_LOWER_BITS = 0x2020202020202020
_HEX_DIGITS = b"0123456789abcdef"
_digits = np.frombuffer(_HEX_DIGITS, dtype=np.uint8).astype(np.uint32)
_BYTE_TO_HEX = _digits[np.arange(256) >> 4] | (_digits[np.arange(256) & 15] << 8)  # byte -> 2 chars
# two bytes (read as one little-endian uint16) -> their 4 hex characters, in one lookup
_WORD_TO_HEX = (_BYTE_TO_HEX[np.arange(1 << 16) & 255] | (_BYTE_TO_HEX[np.arange(1 << 16) >> 8] << 16)).astype("<u4")


class UidFormatError(ValueError):
    """A uid is null, not 32 characters long, or not hexadecimal (message says which)."""


def _string_chunks(uids):
    """The non-empty arrow string arrays behind `uids` (list, Array or ChunkedArray)."""
    import pyarrow as pa

    if isinstance(uids, pa.ChunkedArray):
        chunks = uids.chunks
    elif isinstance(uids, pa.Array):
        chunks = [uids]
    else:
        chunks = [pa.array(list(uids), pa.string())]
    for chunk in chunks:
        if len(chunk) == 0:
            continue
        if chunk.type not in (pa.string(), pa.large_string()):
            if chunk.type in (pa.binary(), pa.large_binary()) or str(chunk.type) in ("string_view", "binary_view"):
                chunk = chunk.cast(pa.large_string())
            else:
                raise UidFormatError("some uids are not strings; a recipe must return the pool's uid column")
        yield chunk


@dataclass
class UidBlock:
    """n uids decoded into DataComp pairs."""

    pairs: np.ndarray  # shape (n,), DATACOMP_UID_DTYPE
    canonical: bool  # every uid was lowercase hex, so text order == (high, low) order

    @classmethod
    def empty(cls, n: int) -> "UidBlock":
        return cls(np.empty(n, DATACOMP_UID_DTYPE), True)

    def fill(self, start: int, chunk: pa.Array) -> int:
        """Decode one arrow string chunk into rows start.. ; returns its length.

        Raises UidFormatError for a null, a uid of another length, or a non-hex character.
        """
        n = len(chunk)
        if chunk.null_count:
            raise UidFormatError("the query returned null uids; a recipe must return the uid of each kept sample")
        _, offsets_buf, data_buf = chunk.buffers()
        width = np.int64 if str(chunk.type) == "large_string" else np.int32
        offsets = np.frombuffer(offsets_buf, dtype=width, count=n + 1, offset=chunk.offset * np.dtype(width).itemsize)
        first = int(offsets[0])
        # fixed width <=> offsets are first + 32 * i (one comparison pass, no diff array)
        if int(offsets[-1]) - first != UID_CHARS * n or not np.array_equal(
            offsets, np.arange(first, first + UID_CHARS * (n + 1), UID_CHARS, dtype=width)
        ):
            raise UidFormatError("some uids are not 32 hex characters; a recipe must return the pool's uid column")
        raw = memoryview(data_buf)[first : first + UID_CHARS * n]
        try:
            pairs = pairs_from_hex(raw, n)  # binascii, C speed: 5x the lookup table it replaced
        except binascii.Error:
            raise UidFormatError("some uids are not hexadecimal; a recipe must return the pool's uid column") from None
        # '0'-'9' and 'a'-'f' all have bit 0x20 set, 'A'-'F' do not: AND every 8-byte word
        # of the text together and the uids were all lowercase iff every byte kept 0x20
        words = np.frombuffer(raw, dtype=np.uint64)
        if int(np.bitwise_and.reduce(words)) & _LOWER_BITS != _LOWER_BITS:
            self.canonical = False
        self.pairs[start : start + n] = pairs
        return n

    @classmethod
    def from_batches(cls, batches) -> "UidBlock":
        """Decode the first column of a stream of Arrow record batches (a query's result read
        batch by batch): only the pairs are kept, 16 bytes a uid; raises UidFormatError as `fill`."""
        parts, canonical = [], True
        for batch in batches:
            block = cls.from_arrow(batch.column(0))
            parts.append(block.pairs)
            canonical &= block.canonical
        pairs = np.concatenate(parts) if parts else np.empty(0, DATACOMP_UID_DTYPE)
        return cls(pairs, canonical)

    @classmethod
    def from_arrow(cls, uids: pa.Array | pa.ChunkedArray | list[str]) -> "UidBlock":
        """Decode every uid of `uids`; raises UidFormatError as `fill` does."""
        chunks = list(_string_chunks(uids))
        block = cls.empty(sum(len(c) for c in chunks))
        start = 0
        for chunk in chunks:
            start += block.fill(start, chunk)
        return block


def pairs_to_text(pairs: np.ndarray) -> np.ndarray:
    """np.dtype("u8,u8") array -> lowercase 32-hex uids as numpy "V32" rows."""
    n = len(pairs)
    halves = np.empty((n, 2), dtype=">u8")  # big-endian: the bytes in the uid's order
    halves[:, 0] = pairs[pairs.dtype.names[0]]
    halves[:, 1] = pairs[pairs.dtype.names[1]]
    return _WORD_TO_HEX[halves.view("<u2")].view(f"V{UID_CHARS}").reshape(n)


def text_to_arrow(text: np.ndarray) -> pa.StringArray | pa.LargeStringArray:
    """Fixed-width "V32" rows -> pyarrow string array without copying the characters."""
    import pyarrow as pa

    n = len(text)
    data = pa.py_buffer(np.ascontiguousarray(text).view(np.uint8))
    if UID_CHARS * n < 2**31:
        offsets = np.arange(0, UID_CHARS * n + 1, UID_CHARS, dtype=np.int32)
        return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), data)
    offsets = np.arange(0, UID_CHARS * n + 1, UID_CHARS, dtype=np.int64)
    return pa.LargeStringArray.from_buffers(n, pa.py_buffer(offsets), data)


def pairs_to_uids(pairs: np.ndarray) -> pa.StringArray | pa.LargeStringArray:
    """np.dtype("u8,u8") array -> pyarrow string array of 32-hex uids (vectorised)."""
    return text_to_arrow(pairs_to_text(pairs))


def sorted_order(pairs: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """Indices into `pairs` (only those in `rows`, when given) in (high, low) order.

    One uint64 key per row: the high half's top bits with the row index in the low bits;
    `np.sort` of that key (SIMD, several times faster than argsort) yields the order.
    Rows whose high halves agree on those top bits (rare for random uids) are then put
    in exact (high, low) order among themselves.
    """
    hi, lo = pairs["f0"], pairs["f1"]
    total = len(pairs)
    if total == 0:
        return np.empty(0, dtype=np.int64)
    bits = max(1, (total - 1).bit_length())
    index_mask = np.uint64((1 << bits) - 1)
    if rows is None:
        keys = hi & ~index_mask
        keys |= np.arange(total, dtype=np.uint64)
    else:
        keys = hi[rows] & ~index_mask
        keys |= rows.astype(np.uint64)
    keys.sort()
    prefix_tie = (keys[1:] ^ keys[:-1]) <= index_mask  # same high bits: order unsure
    keys &= index_mask
    order = keys.view(np.int64)  # row indices < 2**63: the same bits as int64
    if prefix_tie.any():
        involved = np.flatnonzero(np.r_[prefix_tie, False] | np.r_[False, prefix_tie])
        run = np.cumsum(np.r_[True, ~prefix_tie])[involved]  # one id per run of equal prefixes
        members = order[involved]
        order[involved] = members[np.lexsort((lo[members], hi[members], run))]
    return order
