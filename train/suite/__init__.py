"""`train eval --suite DIR | --task DIR`: a model scored on task folders in DataComp's /
clip_benchmark's webdataset format (shards.task_folder), with clip_benchmark's own metric
functions, a bootstrap 95% interval per metric, and DataComp's headline metric per task
and averaged over the suite (docs/design.md, "Evaluation")."""
