"""Run logging: OUT/metrics.jsonl, one line per logged step, and the progress bar.

Each line averages the loss over the steps since the previous line and over all ranks,
and reports the throughput and the fraction of that time spent waiting for data."""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from shards.atomic import write_text_atomic
from shards.layout import RunDir
from zoo.distributed import DistInfo, mean_across


def truncate_metrics(path: Path, step: int) -> None:
    """On resume drop lines logged after the checkpoint, so no step is counted twice."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line)
        except (ValueError, KeyError):
            break  # a torn last line from the kill
    write_text_atomic(path, "".join(l + "\n" for l in kept))


def last_logged_loss(path: Path) -> float:
    """The loss of the file's last line; NaN when there is none (another rank's view, or no line yet)."""
    lines = path.read_text().splitlines() if path.is_file() else []
    return float(json.loads(lines[-1])["loss"]) if lines else float("nan")


class _Window:
    """What happened since the last logged line."""

    def __init__(self, device: torch.device) -> None:
        self.loss = torch.zeros((), device=device)  # summed on the device: no sync per step
        self.steps = 0
        self.samples = 0
        self.wait = 0.0
        self.t0 = time.perf_counter()


class MetricsLog:
    """Accumulates steps and writes metrics.jsonl lines (rank 0) when asked."""

    def __init__(self, out: Path, info: DistInfo, total_steps: int, first_step: int, progress: bool) -> None:
        from tqdm import tqdm

        self.path = RunDir(out).metrics_jsonl
        self.info = info
        self.total_steps = total_steps
        self.bar = tqdm(total=total_steps, initial=first_step, disable=not (progress and info.is_main),
                        unit="step", dynamic_ncols=True)
        self.window = _Window(info.device)
        # The mean loss of the last logged line: on resume, the last line kept in the file, so a run
        # resumed at its final checkpoint (no step left to log) reports the loss it ended with.
        self.last_loss = last_logged_loss(self.path) if first_step else float("nan")

    def waited(self, seconds: float) -> None:
        """Time this step spent waiting for its batch."""
        self.window.wait += seconds

    def stepped(self, loss: torch.Tensor, samples: int) -> None:
        """Count one finished step of `samples` global samples."""
        self.window.loss += loss.detach()
        self.window.steps += 1
        self.window.samples += samples
        self.bar.update(1)

    def write(self, step: int, samples: int, flops: int, lr: float, logit_scale: torch.Tensor | None,
              budget_flops: float | None) -> None:
        """Log the window as one line and start a new one. A collective (the mean loss).
        Without a logit scale (train mim) the line has no temperature."""
        window = self.window
        mean_loss = float(mean_across(window.loss / window.steps, self.info))
        elapsed = max(time.perf_counter() - window.t0, 1e-9)
        self.last_loss = mean_loss
        if self.info.is_main:
            record = {
                "step": step, "samples": samples, "flops": flops, "loss": mean_loss, "lr": lr,
                "temperature": float(1.0 / logit_scale.detach().exp()) if logit_scale is not None else None,
                "samples/s": window.samples / elapsed, "data-wait fraction": window.wait / elapsed,
            }
            if logit_scale is None:
                del record["temperature"]
            with open(self.path, "a") as handle:
                handle.write(json.dumps(record) + "\n")
            budget_used = flops / budget_flops if budget_flops else step / self.total_steps
            self.bar.set_postfix(budget=f"{100 * budget_used:.0f}%", loss=f"{mean_loss:.3f}",
                                 rate=f"{record['samples/s']:.0f}/s")
        self.window = _Window(self.info.device)

    def close(self) -> None:
        self.bar.close()
