"""Training: models, losses, optimisers, the training loop, evaluation, sweeps, reports."""

# Register the project's own model configs with open_clip (cheaply: only once open_clip is imported),
# so that open_clip.create_model("tiny-vit-32", pretrained="runs/NAME/final.pt") works after `import train`.
from train.models import register_on_import as _register_on_import

_register_on_import()
