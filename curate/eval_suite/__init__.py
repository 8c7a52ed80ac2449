"""`curate eval-suite`: evaluation task folders in clip_benchmark's webdataset format
(shards.task_folder) built from class folders (classes.py), image-caption pairs
(pairs.py) and the demo pools (demo.py). `train eval --suite` reads them."""
