"""The class-folder eval set (`train eval --eval DIR`): one sub-folder of images per class,
named by the class (or by its ImageNet synset id), and an optional templates.txt. Its
rules live here because two stages read such folders: train evaluates one, and curate
converts one into a task folder (shards.task_folder)."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

from clikit.errors import UserError
from shards.reader import FOLDER_IMAGE_EXTENSIONS

FOLDER_IMAGE_SUFFIXES = {f".{ext}" for ext in FOLDER_IMAGE_EXTENSIONS}
SYNSET_RE = re.compile(r"^n\d{8}$")
TEMPLATES_FILE = "templates.txt"


def class_folders(eval_dir: Path) -> list[Path]:
    """One sub-folder per class, hidden folders left out, in name order (the label order)."""
    return sorted(p for p in eval_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def class_names(folders: Sequence[Path]) -> list[str]:
    """Folder names as class names; ImageNet synset ids map through open_clip's class names."""
    names = [f.name for f in folders]
    if names and all(SYNSET_RE.match(n) for n in names):
        import timm.data
        from open_clip import IMAGENET_CLASSNAMES

        info = timm.data.ImageNetInfo()  # the 1000 synsets in class-index order
        index = {s: i for i, s in enumerate(info.label_names())}
        unknown = [n for n in names if n not in index]
        if unknown:
            raise UserError(f"eval folders {unknown[:3]} are not ImageNet-1k synsets; name folders by class name")
        return [IMAGENET_CLASSNAMES[index[n]] for n in names]
    return [n.replace("_", " ") for n in names]


def load_templates(eval_dir: Path) -> list[str]:
    """templates.txt (one per line, `{}` or `{c}` where the class name goes) or open_clip's,
    each with `{}` where the class name goes."""
    path = eval_dir / TEMPLATES_FILE
    if path.is_file():
        templates = []
        for line in path.read_text().splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            line = line.replace("{classname}", "{}").replace("{c}", "{}")
            templates.append(line if "{}" in line else line + " {}")
        if templates:
            return templates
    from open_clip import OPENAI_IMAGENET_TEMPLATES

    return [t("{}") for t in OPENAI_IMAGENET_TEMPLATES]


def folder_images(folder: Path) -> list[Path]:
    """The images directly in `folder`, by name."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in FOLDER_IMAGE_SUFFIXES)
