"""`curate eval-suite`: evaluation task folders in clip_benchmark's webdataset format
(shards.task_folder) built from class folders (classes.py), image-caption pairs
(pairs.py) and the demo pools (demo.py). `train eval --suite` reads them."""
from __future__ import annotations

import json
from pathlib import Path

from shards.layout import Pool

# Light on purpose (no numpy, PIL or scikit-learn): `train sweep`'s file check asks for a
# pool's demo suite, and `train --help` loads that check.
SUITE_JSON = "suite.json"


def demo_suite_dir(pool: Path) -> Path:
    """Where `curate demo-pool` puts a pool's demo suite."""
    return pool / "suites" / "demo"


def demo_suite_of_pool(pool: Path) -> Path | None:
    """The demo suite of the demo pool a downloaded pool came from (its pool.json's source is
    DEMO/metadata*.parquet and DEMO/suites/demo was built), else None."""
    layout = Pool(pool)
    if not layout.pool_json.is_file():
        return None
    for source in json.loads(layout.pool_json.read_text()).get("source") or []:
        suite = demo_suite_dir(Path(source).parent)
        if (suite / SUITE_JSON).is_file():
            return suite.resolve()
    return None
