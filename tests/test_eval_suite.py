"""`curate eval-suite` and `train eval --suite/--task`: task folders in DataComp's /
clip_benchmark's webdataset format, scored with clip_benchmark's functions. The known
answer is the installed `clip_benchmark eval` command itself, run on the same checkpoint
(written as an open_clip local-dir folder) and the same task folders."""
from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest

from clihelp import run_curate

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, WANDB_MODE="disabled", HF_HUB_OFFLINE="1", NO_ALBUMENTATIONS_UPDATE="1", OMP_NUM_THREADS="1",
           PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([*args], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def train_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run(sys.executable, "-m", "train", *map(str, args), check=check)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """An untrained, seeded tiny-vit-32 saved as `train run` saves its final.pt."""
    import torch

    from zoo.checkpoint import save_atomic
    from zoo.models import create_model

    torch.manual_seed(0)
    model = create_model("tiny-vit-32")[0]
    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    save_atomic({"state_dict": model.state_dict(), "model_name": "tiny-vit-32"}, run_dir / "final.pt")
    return run_dir


@pytest.fixture(scope="module")
def suite(tmp_path_factory) -> Path:
    """A suite built by `curate eval-suite` from drawn shapes: a class folder (12 classes x 4)
    and the same images as pairs with three captions each."""
    from shapes_data import make_eval_dir

    root = tmp_path_factory.mktemp("suite-src")
    make_eval_dir(root / "shapes", per_class=4)
    pairs = make_eval_dir(root / "pairs", per_class=4)
    for caption in pairs.rglob("*.txt"):
        if caption.name != "templates.txt":
            words = caption.read_text()
            caption.write_text(f"{words}\na picture of {words[2:]}\n{words[2:]}, drawn\n")
    out = root / "suite"
    done = run_curate("eval-suite", out, "--classes", root / "shapes", "--pairs", root / "pairs")
    assert done.returncode == 0, done.stderr
    return out


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_train_eval_equals_the_clip_benchmark_command_on_the_same_checkpoint(tiny_run, suite, tmp_path):
    from train.suite.openclip_dir import write_open_clip_dir

    before = _tree(tiny_run)
    done = train_cli("eval", tiny_run, "--suite", suite)
    assert "average of the headlines" in done.stdout
    after = _tree(tiny_run)
    assert set(after) - set(before) == {"evals/suite.json"}  # never eval.json or evals.jsonl
    assert all(after[name] == data for name, data in before.items())
    ours = json.loads(after["evals/suite.json"])

    folder = write_open_clip_dir(tiny_run, tmp_path / "open_clip")
    theirs = {}
    for name, task in (("shapes", "zeroshot_classification"), ("pairs", "zeroshot_retrieval")):
        out = tmp_path / f"{name}.json"
        run("clip_benchmark", "eval", "--dataset", f"wds/{name}", "--dataset_root", str(suite / name),
            "--model", f"local-dir:{folder}", "--task", task, "--recall_k", "1", "5", "10", "--no_amp",
            "--batch_size", "256", "--num_workers", "0", "--output", str(out))  # our batch: the same sums
        theirs[name] = json.loads(out.read_text())["metrics"]
    keys = {"shapes": ["acc1", "acc5", "mean_per_class_recall"],
            "pairs": [f"{way}_retrieval_recall@{k}" for way in ("image", "text") for k in (1, 5, 10)]}
    for name, names in keys.items():
        got = ours["tasks"][name]["metrics"]
        assert all(abs(got[key] - theirs[name][key]) <= 1e-4 for key in names), (name, got, theirs[name])
    assert ours["tasks"]["pairs"]["captions"] == 3 * 48
    # DataComp's headlines: acc1 for a task it does not name, the mean of the two R@1 for retrieval.
    assert ours["tasks"]["shapes"]["metrics"]["main_metric"] == ours["tasks"]["shapes"]["metrics"]["acc1"]
    pairs = ours["tasks"]["pairs"]["metrics"]
    assert pairs["main_metric"] == pytest.approx((pairs["image_retrieval_recall@1"] + pairs["text_retrieval_recall@1"]) / 2)
    low, high = ours["average"]["ci95"]
    assert low <= ours["average"]["main_metric"] <= high


def test_bootstrap_interval_covers_the_estimate_shrinks_with_more_images_and_is_seeded():
    from sklearn.metrics import balanced_accuracy_score

    from train.suite import bootstrap

    rng = np.random.default_rng(1)
    widths = []
    for n in (100, 400, 1600):
        hits = (rng.random(n) < 0.3).astype(float)
        draws = bootstrap.mean(hits, bootstrap.resample(n, 1000, 0, "t"))
        low, high = bootstrap.interval(draws)
        assert low < hits.mean() < high
        widths.append(high - low)
    assert widths[0] / widths[1] == pytest.approx(2, rel=0.2) and widths[1] / widths[2] == pytest.approx(2, rel=0.2)
    assert np.array_equal(bootstrap.resample(50, 10, 0, "t"), bootstrap.resample(50, 10, 0, "t"))
    assert not np.array_equal(bootstrap.resample(50, 10, 0, "t"), bootstrap.resample(50, 10, 1, "t"))
    # Per-class recall of the drawn images is sklearn's balanced accuracy of those images,
    # over the classes drawn (class 3 has one image: most draws leave it out).
    labels, pred = np.append(rng.integers(0, 3, 29), 3), rng.integers(0, 4, 30)
    idx = bootstrap.resample(30, 20, 0, "t")
    draws = bootstrap.mean_class_recall(labels, (labels == pred).astype(float), idx, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "y_pred contains classes not in y_true"
        assert draws == pytest.approx([balanced_accuracy_score(labels[i], pred[i]) for i in idx])
    # Retrieval: per-caption recall is redrawn with each image's captions.
    assert bootstrap.ratio(np.array([2.0, 0.0]), np.array([2.0, 3.0]), np.array([[0, 0], [0, 1]])) == \
        pytest.approx([1.0, 0.4])


def _tar(path: Path, members: dict[str, bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _break_classnames(task: Path) -> None:
    (task / "classnames.txt").unlink()


def _break_nshards(task: Path) -> None:
    (task / "test" / "nshards.txt").write_text("2\n")


def _break_extra_shard(task: Path) -> None:
    (task / "test" / "1.tar").write_bytes((task / "test" / "0.tar").read_bytes())


def _break_member_name(task: Path) -> None:
    _tar(task / "test" / "0.tar", {"../x.png": b"x", "../x.cls": b"0"})


def _break_label(task: Path) -> None:
    _tar(task / "test" / "0.tar", {"a.png": (task / "probe.png").read_bytes(), "a.cls": b"12"})


@pytest.mark.parametrize("break_it, says", [
    (_break_classnames, "classnames.txt is missing"),
    (_break_nshards, "says 2 shards"),
    (_break_extra_shard, "is also 1.tar"),
    (_break_member_name, "unsafe member name '../x.png'"),
    (_break_label, "class '12' is not an index"),
])
def test_a_bad_task_folder_fails_in_one_line(tiny_run, suite, tmp_path, break_it, says):
    import shutil

    from PIL import Image

    task = tmp_path / "shapes"
    shutil.copytree(suite / "shapes", task)
    Image.new("RGB", (8, 8)).save(task / "probe.png")
    break_it(task)
    done = train_cli("eval", tiny_run, "--task", task, check=False)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and says in done.stderr, done.stderr
    assert not (tiny_run / "evals" / "shapes.json").exists()


def test_a_class_folder_or_a_stray_folder_is_refused_with_what_to_do(tmp_path):
    from clikit.errors import UserError
    from shapes_data import make_eval_dir
    from train.suite.tasks import load_suite, load_task

    classes = make_eval_dir(tmp_path / "classes", per_class=1)
    with pytest.raises(UserError, match="--eval, or convert it with `curate eval-suite OUT --classes DIR`"):
        load_task(classes)
    with pytest.raises(UserError, match="is not a task folder"):
        load_suite(tmp_path)


def test_pairs_from_shards_keep_images_that_decode_and_bad_input_is_one_line(tmp_path):
    from shapes_data import make_shape_shards
    from shards.images import open_rgb
    from shards.task_folder import iter_samples, read_task_folder

    make_shape_shards(tmp_path / "held-out", 40, per_shard=20, corrupt=3)
    done = run_curate("eval-suite", tmp_path / "suite", "--pairs", tmp_path / "held-out", "--limit", "30")
    assert done.returncode == 0, done.stderr
    samples = list(iter_samples(read_task_folder(tmp_path / "suite" / "held-out")))
    assert len(samples) == 30 and all(open_rgb(image) and len(caps) == 1 for _, image, caps in samples)
    for args in ([], ["--classes", tmp_path / "nowhere"], ["--pairs", tmp_path / "held-out"]):
        bad = run_curate("eval-suite", tmp_path / "suite", *args)  # the last: its task exists already
        assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "error:" in bad.stderr, bad.stderr


def test_the_headline_is_the_folder_s_then_datacomp_s_then_acc1(suite, tmp_path):
    import shutil

    from clikit.errors import UserError
    from train.suite.tasks import datacomp_key, load_task

    assert datacomp_key("wds_vtab-caltech101_test") == "vtab/caltech101"
    assert datacomp_key("wds_imagenet-a_test") == "imagenet-a" and datacomp_key("shapes") is None
    for name, main in (("wds_vtab-pets_test", "mean_per_class_recall"), ("fgvc_aircraft", "mean_per_class_recall"),
                       ("wds_cars_test", "acc1"), ("mine", "acc1")):
        shutil.copytree(suite / "shapes", tmp_path / name)
        assert load_task(tmp_path / name).main_metric == main
    (tmp_path / "mine" / "main_metric.txt").write_text("mean_per_class_recall\n")
    assert load_task(tmp_path / "mine").main_metric == "mean_per_class_recall"
    (tmp_path / "mine" / "main_metric.txt").write_text("lp_acc1\n")  # no train split: no probe
    with pytest.raises(UserError, match="not one this task reports"):
        load_task(tmp_path / "mine")
    assert load_task(suite / "pairs").main_metric == "mean_recall@1"


def _hashes(folder: Path) -> set[str]:
    return {hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.suffix in (".jpg", ".png")}


def _suite_image_hashes(task: Path) -> set[str]:
    from shards.task_folder import iter_samples, read_task_folder

    folder = read_task_folder(task)
    return {hashlib.sha256(image).hexdigest() for split in folder.splits for _, image, _ in iter_samples(folder, split)}


@pytest.mark.parametrize("source, tasks", [
    ("shapes", {"shapes", "shapes-colour", "shapes-count", "digits", "shapes-captions"}),
    ("real", {"fashion", "icons", "fashion-colour", "digits", "fashion-captions"}),
])
def test_the_demo_suite_holds_five_tasks_of_held_out_images(tmp_path, source, tasks):
    from clikit.errors import UserError
    from curate.demo import make_demo_pool
    from curate.eval_suite.demo import build_demo_suite, demo_suite_dir
    from shards.task_folder import iter_samples
    from train.suite.tasks import load_suite

    pool = tmp_path / "pool"
    make_demo_pool(pool, size=60, seed=3, seed_size=20, eval_per_class=2, source=source)
    out = demo_suite_dir(pool)
    summary = build_demo_suite(out, pool, images=24)
    loaded = {t.name: t for t in load_suite(out)}
    assert set(loaded) == tasks == set(summary["tasks"])
    assert loaded["digits"].probe and not any(t.probe for n, t in loaded.items() if n != "digits")
    captions = next(t for n, t in loaded.items() if n.endswith("-captions"))
    samples = list(iter_samples(captions.folder))
    assert len(samples) >= 12 and all(len({c.lower().rstrip(".") for c in caps}) == 5 for _, _, caps in samples)
    # Fresh pictures: none is a pool image, a seed-set image or an image of the pool's eval folder.
    pool_images = _hashes(pool / "images") | _hashes(pool / "eval")
    assert pool_images and not any(_suite_image_hashes(out / name) & pool_images for name in tasks)
    # Built again with the same arguments: reused; with others: refused unless overwritten.
    stamp = (out / "suite.json").stat().st_mtime_ns
    assert build_demo_suite(out, pool, images=24)["tasks"] == summary["tasks"]
    assert (out / "suite.json").stat().st_mtime_ns == stamp
    with pytest.raises(UserError, match="--overwrite"):
        build_demo_suite(out, pool, images=12)
    assert build_demo_suite(out, pool, images=12, overwrite=True)["images"] == 12
