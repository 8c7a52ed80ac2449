"""The model zoo that scoring and training share: the project's model configs and their
registration with open_clip and timm, model creation, checkpoint reading and loading, and
torchrun/DDP setup.

Importing zoo changes nothing in open_clip or timm. The zoo's own functions (create_model,
check_model_name, all_model_names, checkpoint.load_model) register the project's configs
when they need them; code that calls open_clip directly with a project name calls
`zoo.models.register_model_configs()` first, e.g. before
`open_clip.create_model("tiny-vit-32", pretrained="runs/NAME/final.pt")`."""
