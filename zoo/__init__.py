"""The model zoo that scoring and training share: the project's model configs and their
registration with open_clip and timm, model creation, checkpoint reading and loading, and
torchrun/DDP setup.

Importing zoo registers the project's configs with open_clip (cheaply: only once open_clip
is imported), so `open_clip.create_model("tiny-vit-32", pretrained="runs/NAME/final.pt")`
works after `import zoo` (or `import train`, which imports zoo)."""

from zoo.models import register_on_import as _register_on_import

_register_on_import()
