"""MetaCLIP's substring matching (Xu et al. 2023, facebookresearch/MetaCLIP substr_matching):
an entry matches a caption when " entry " occurs in the caption with spaces put around
its punctuation, so entries match whole words and phrases ("red" in "a red car.", not in
"bored"). Many entries are matched in one pass over the caption by an Aho-Corasick automaton
(pyahocorasick), as MetaCLIP's own scaled-up matcher does.

One difference, said here and in docs/design.md: captions and entries are lower-cased,
since WordNet lists its nouns in lower case and a caption's first word is capitalised.
"""
from __future__ import annotations

from typing import Sequence

# MetaCLIP's spacing(): these get a space either side, these become spaces.
_WRAPPED = ",.;:?!`"
_SPACED = "\t\n\r"
_SPACING = str.maketrans({**{c: f" {c} " for c in _WRAPPED}, **{c: " " for c in _SPACED}})


def spaced(text: str) -> str:
    """The caption as matching sees it: lower case, padded, punctuation wrapped in spaces."""
    return f" {text.lower().translate(_SPACING)} "


class EntryMatcher:
    """Which of `entries` (ids = positions) a caption names."""

    def __init__(self, entries: Sequence[str]) -> None:
        import ahocorasick  # pyahocorasick: a C automaton

        self.size = len(entries)
        self._automaton = ahocorasick.Automaton()
        for entry_id, entry in enumerate(entries):
            key = f" {entry.lower()} "
            if key.strip():
                ids = self._automaton.get(key, ())
                self._automaton.add_word(key, (*ids, entry_id))  # the same text twice: both ids
        self._empty = len(self._automaton) == 0
        if not self._empty:
            self._automaton.make_automaton()

    def ids(self, caption: str | None) -> list[int]:
        """Sorted ids of the entries the caption names ([] for no caption)."""
        if not caption or self._empty:
            return []
        found: set[int] = set()
        for _, ids in self._automaton.iter(spaced(caption)):
            found.update(ids)
        return sorted(found)
