"""A class-folder eval set (shards.class_folder) as a zero-shot classification task."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

from clikit.errors import UserError
from curate.eval_suite.images import member_image
from shards.class_folder import class_folders, class_names, folder_images, load_templates
from shards.task_folder import CLASSIFICATION, TEST, Target, write_task_folder


def write_class_task(source: Path, out: Path) -> int:
    """Convert SOURCE/<class>/*.jpg|png... (+ templates.txt) into the task folder OUT;
    returns the number of images."""
    if not source.is_dir():
        raise UserError(f"--classes {source}: no such directory; give a folder with one sub-folder per class")
    folders = class_folders(source)
    if len(folders) < 2:
        raise UserError(f"--classes {source} needs at least 2 class sub-folders, found {len(folders)}")
    if not any(folder_images(f) for f in folders):
        raise UserError(f"--classes {source} has class folders but no images")
    templates = [t.replace("{}", "{c}") for t in load_templates(source)]

    def samples() -> Iterator[tuple[bytes, str, Target]]:
        for label, folder in enumerate(folders):
            for path in folder_images(folder):
                yield (*member_image(path), label)

    return write_task_folder(out, CLASSIFICATION, {TEST: samples()}, classnames=class_names(folders),
                             templates=templates)
