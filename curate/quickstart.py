"""`curate quickstart`: the whole pipeline on the generated demo pool, on CPU, in minutes.

Layout under the work folder (a rerun reuses whatever step already finished):

    DIR/demo       the generated demo pool (truth.parquet, seed.parquet, eval/)
    DIR/pool       the downloaded pool, which later stages score, dedup and filter in place
    DIR/seed-pool  the downloaded seed set
    DIR/runs       training runs
    DIR/shardset   the exported shard set
"""
from __future__ import annotations

import contextlib
import json
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from curate.errors import UserError


@dataclass
class QuickstartConfig:
    workdir: Path = Path("quickstart")
    size: int = 2000
    seed: int = 0
    processes: int = 1
    threads: int = 32
    image_size: int = 64
    samples_per_shard: int = 500


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

    def _step(self, name: str):
        outer = self

        class _Timer:
            def __enter__(self):
                outer.say(f"== {name}")
                self.started = time.perf_counter()

            def __exit__(self, *exc):
                outer.timings[name] = time.perf_counter() - self.started

        return _Timer()

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

    def make_demo(self) -> None:
        from curate.demo import make_demo_pool

        with self._step("demo pool"):
            self.demo.parent.mkdir(parents=True, exist_ok=True)
            summary = make_demo_pool(self.demo, size=self.config.size, seed=self.config.seed,
                                     base_url=self.server_url(), progress=True)
            counts = summary.get("kinds") or summary.get("counts") or {}
            self.say(f"   {self.demo}: {self.config.size} pool rows {counts}")

    def download(self, metadata: Path, pool: Path, label: str) -> None:
        from curate.download.run import DownloadSettings, download_pool

        with self._step(f"download {label}"):
            done = pool / "pool.json"
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
        from curate.inspect import format_report, inspect_pool

        with self._step("inspect"):
            self.say(format_report(inspect_pool(self.pool)))

    def run(self) -> None:
        started = time.perf_counter()
        with self._stack:
            self.make_demo()
            self.download(self.demo / "metadata.parquet", self.pool, "pool")
            self.inspect()
        total = time.perf_counter() - started
        self.say("== done in {:.0f}s ({})".format(total, ", ".join(f"{k} {v:.0f}s" for k, v in self.timings.items())))
        self.say(f"   demo pool:   {self.demo} (truth.parquet, seed.parquet, eval/)")
        self.say(f"   pool:        {self.pool} (shards/, pool.json)")


def run_quickstart(config: QuickstartConfig) -> None:
    Quickstart(config).run()
