"""`train models`' rows: each model's facts read from its config (towers, image size, embedding
size; no model built), and the parameters and training FLOPs per sample that
train/model_facts.py measured, kept in a cache so a listing shows them without measuring again.

The cache is one JSON file in the user's cache folder (platformdirs: $XDG_CACHE_HOME/clipcurate
or ~/.cache/clipcurate on Linux), keyed by model name, config and the versions of the code that
builds the model; it is written atomically and a damaged one counts as empty."""
from __future__ import annotations

import hashlib
import json
from importlib.metadata import version
from pathlib import Path
from typing import Any

import platformdirs

import zoo.models
from shards.atomic import write_json_atomic

MEASURED = ("params", "image_size", "train_flops_per_sample")
# The packages that build a model; the project's own timm towers are code in zoo/models.py.
BUILDERS = ("torch", "open_clip_torch", "timm")


def cache_file() -> Path:
    return Path(platformdirs.user_cache_dir("clipcurate")) / "models.json"


def config_row(name: str, config: dict[str, Any]) -> dict[str, Any]:
    """A listing row from the config alone; params and FLOPs None until measured. The tower kinds
    follow open_clip's choice: a timm model, a ResNet (`layers` a list) or its ViT; a Hugging Face
    text model or its text transformer."""
    vision, text = config["vision_cfg"], config["text_cfg"]
    if vision.get("timm_model_name"):
        vision_kind = f"timm:{vision['timm_model_name']}"
    else:
        vision_kind = "resnet" if isinstance(vision.get("layers"), (list, tuple)) else "vit"
    size = vision.get("image_size", 224)  # open_clip's default
    return {
        "name": name, "vision": vision_kind,
        "text": f"hf:{text['hf_model_name']}" if text.get("hf_model_name") else "transformer",
        "image_size": int(size[0] if isinstance(size, (list, tuple)) else size),
        "embed_dim": int(config["embed_dim"]), "params": None, "train_flops_per_sample": None,
    }


def measurement_key(name: str, config: dict[str, Any]) -> str:
    code = {package: version(package) for package in BUILDERS}
    code["zoo.models"] = hashlib.sha256(Path(zoo.models.__file__).read_bytes()).hexdigest()
    blob = json.dumps({"name": name, "config": config, "code": code}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


class MeasurementCache:
    """Measured facts by measurement_key; `save` writes the file when something was added."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.entries: dict[str, dict[str, Any]] = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):  # none yet, or damaged: a cache starts again empty
            self.entries = {}
        if not isinstance(self.entries, dict):
            self.entries = {}
        self.changed = False

    def get(self, name: str, config: dict[str, Any]) -> dict[str, Any] | None:
        return self.entries.get(measurement_key(name, config))

    def put(self, name: str, config: dict[str, Any], row: dict[str, Any]) -> None:
        """Keep a successful measurement (a failed one, e.g. a tower that needs a download, is not kept)."""
        if row.get("error") is None and row.get("train_flops_per_sample") is not None:
            self.entries[measurement_key(name, config)] = {"name": name, **{k: row[k] for k in MEASURED}}
            self.changed = True

    def save(self) -> None:
        if self.changed:
            write_json_atomic(self.path, self.entries, indent=1, sort_keys=True)
            self.changed = False
