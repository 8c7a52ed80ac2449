"""The entry lists captions are matched against.

- metadata (MetaCLIP's balancing): WordNet's nouns, as Debian's `wordnet-base` ships them
  (/usr/share/wordnet/index.noun, 117k lemmas; MetaCLIP's list starts from WordNet's synsets
  too), or a user's file of one entry a line, plus the --classes names;
- classes (DataComp's text-based filter): the class names of an eval suite (every task
  folder's classnames.txt), of one task folder, of a class folder (DIR/<class>/, the demo
  pool's eval/), or a file of one name a line.

Entries are lower-cased and kept once, in first-seen order: an entry's id is its position.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from clikit.bounded import TEXT_LIST_BYTES, read_text
from clikit.errors import UserError
from shards.class_folder import class_folders
from shards.class_folder import class_names as folder_class_names
from shards.task_folder import CLASSNAMES, is_task_folder, read_task_folder

WORDNET_NOUNS = Path("/usr/share/wordnet/index.noun")
WORDNET = "wordnet"  # --metadata's default: WordNet's nouns
WORDNET_HINT = "install Debian's wordnet-base (apt-get install -y wordnet-base) or pass --metadata FILE"


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, None] = {}
    for name in names:
        name = " ".join(name.lower().split())
        if name:
            seen.setdefault(name, None)
    return list(seen)


def _lines(path: Path, option: str) -> list[str]:
    try:
        return read_text(path, TEXT_LIST_BYTES).splitlines()
    except UnicodeDecodeError:
        raise UserError(f"{option} {path} is not UTF-8 text; save it as UTF-8") from None


def wordnet_nouns(path: Path = WORDNET_NOUNS) -> list[str]:
    """WordNet's noun lemmas ("ice_cream" -> "ice cream"), from its index file; the licence
    header's lines start with spaces."""
    if not path.is_file():
        raise UserError(f"WordNet's noun index {path} is missing; {WORDNET_HINT}")
    return _unique([line.split(" ", 1)[0].replace("_", " ") for line in _lines(path, "WordNet")
                    if line and not line.startswith(" ")])


def class_names(source: Path) -> list[str]:
    """The class names of a suite folder (its task folders'), a task folder, a class folder
    (one sub-folder per class) or a text file."""
    if source.is_file():
        names = _lines(source, "--classes")
    elif is_task_folder(source):
        names = list(read_task_folder(source).classnames)
    elif source.is_dir():
        tasks = [read_task_folder(d) for d in sorted(source.iterdir()) if d.is_dir() and is_task_folder(d)]
        names = ([name for task in tasks for name in task.classnames] if tasks
                 else folder_class_names(class_folders(source)))
    else:
        raise UserError(f"--classes {source} does not exist; give a suite folder, a task folder or a file of names")
    names = _unique(names)
    if not names:
        raise UserError(f"--classes {source} names no classes (no {CLASSNAMES} with names, or an empty file)")
    return names


@dataclass(frozen=True)
class EntryLists:
    """The lists the annotations match against (None: that column is not written) and where they came from."""

    metadata: list[str] | None
    classes: list[str] | None
    metadata_source: str | None
    classes_source: str | None

    def describe(self) -> dict:
        """What annotations.json records: each list's source, size and sha256."""
        def about(entries: list[str] | None, source: str | None) -> dict | None:
            if entries is None:
                return None
            digest = hashlib.sha256("\n".join(entries).encode()).hexdigest()
            return {"source": source, "entries": len(entries), "sha256": digest}

        return {"metadata": about(self.metadata, self.metadata_source),
                "classes": about(self.classes, self.classes_source)}


def entry_lists(metadata: str | None, classes: Path | None) -> tuple[EntryLists, str | None]:
    """The entry lists for --metadata (WORDNET, a file, or "none") and --classes, and a warning
    when the default WordNet list is not installed (the metadata column is then left out)."""
    names = class_names(classes) if classes is not None else None
    warning = None
    chosen = metadata or WORDNET
    if chosen == "none":
        base = None
    elif chosen == WORDNET:
        base = wordnet_nouns() if WORDNET_NOUNS.is_file() else None
        if base is None:
            warning = f"no metadata entries (WordNet's {WORDNET_NOUNS} is missing): {WORDNET_HINT}"
    else:
        path = Path(chosen)
        if not path.is_file():
            raise UserError(f"--metadata {chosen} is not a file; give a file of entries (one a line), "
                            f"{WORDNET!r} or 'none'")
        base = _unique(_lines(path, "--metadata"))
    entries = _unique(base + (names or [])) if base is not None else None
    lists = EntryLists(entries, names, chosen if base is not None else None,
                       str(classes) if classes is not None else None)
    return lists, warning
