"""The dedup stage: find pairs with the chosen methods, group, keep one per group, write
dedup/NAME/groups.parquet and summary.json (temporary folder, renamed when complete)."""
from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from curate.dedup.decontam import ImageEmbedder
from curate.dedup.graph import METHOD_ORDER, DuplicateGraph, group_ids
from curate.dedup.hashes import MAX_PHASH_BITS
from curate.dedup.keep import KEEP_POLICIES
from curate.dedup.pool_inputs import ScoredPool
from clikit.errors import UserError

METHODS = ("exact", "phash", "phash-knn", "knn", "semdedup")  # what --method lists may name
ALL_METHODS = ("exact", "phash", "knn")  # what `all` stands for; semdedup is an alternative to knn
# The recommended default: byte copies, plus near copies that phash AND the embedding agree on.
# Either near signal alone is fooled (flat grounds collide in phash, a weak seed model puts
# look-alikes above 0.95), so neither phash nor knn alone is in it (see phash_knn.py).
DEFAULT_METHOD = "exact,phash-knn"
# --threshold / --phash-bits when not given, per method. phash-knn is looser on each signal
# than the single-signal methods because the other signal guards it: 8 bits is the most a
# re-encoded, resized, cropped or recoloured copy moves (the demo pool's bound), and 0.9
# keeps copies whose embedding a weak seed model moves, while the hash rejects look-alikes.
# phash-knn at 6 bits / 0.95: near-duplicate pair precision and recall >= 0.95 on the demo pool
# with two different seed models (8 bits / 0.9 fitted only the first one: 0.88 precision with the second).
DEFAULT_THRESHOLD = {"knn": 0.95, "semdedup": 0.95, "phash-knn": 0.95, "against": 0.95}
DEFAULT_PHASH_BITS = {"phash": 4, "phash-knn": 6}
INDEX_KINDS = ("auto", "flat", "ivf")
FORMAT_VERSION = 2
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


def parse_methods(text: str) -> tuple[str, ...]:
    """'exact,phash-knn' -> ("exact", "phash-knn"): names checked, `all` expanded, repeats
    dropped, in METHOD_ORDER (exact first, so byte copies are labelled exact)."""
    names = [m.strip() for m in str(text).split(",") if m.strip()]
    if not names:
        raise UserError(f"--method {text!r} names no method; use one or more of {', '.join(METHODS)} or all, comma-separated")
    chosen: set[str] = set()
    for name in names:
        if name == "all":
            chosen.update(ALL_METHODS)
        elif name in METHODS:
            chosen.add(name)
        else:
            raise UserError(f"--method {name!r} is not one of {', '.join(METHODS)}, all (comma-separate several)")
    return tuple(m for m in METHOD_ORDER if m in chosen)


@dataclass
class DedupSettings:
    """Arguments of one dedup run; everything but `overwrite`/`progress` is recorded.

    `threshold` / `phash_bits` left as None take each method's default
    (DEFAULT_THRESHOLD / DEFAULT_PHASH_BITS); a given value applies to every method that
    uses it (the cosine threshold also to `against`).
    """

    scores: str
    method: str = DEFAULT_METHOD
    threshold: float | None = None
    tag: str | None = None
    keep: str = "best-score"
    clusters: int | None = None
    phash_bits: int | None = None
    index: str = "auto"
    nlist: int | None = None
    nprobe: int | None = None
    against: str | None = None
    seed: int = 0
    overwrite: bool = False
    progress: bool = False

    @property
    def name(self) -> str:
        if self.tag:
            return self.tag
        if "," not in self.method:
            return self.method.strip()
        return "+".join(parse_methods(self.method))  # "exact,phash-knn" -> dedup/exact+phash-knn

    @property
    def methods(self) -> tuple[str, ...]:
        return parse_methods(self.method)

    def threshold_for(self, method: str) -> float:
        """Cosine threshold used by `method` (knn, semdedup, phash-knn or against)."""
        return self.threshold if self.threshold is not None else DEFAULT_THRESHOLD[method]

    def phash_bits_for(self, method: str) -> int:
        """Hamming bound used by `method` (phash or phash-knn)."""
        return self.phash_bits if self.phash_bits is not None else DEFAULT_PHASH_BITS[method]

    def resolved(self) -> dict[str, dict[str, Any]]:
        """The parameters each method actually ran with (defaults filled in)."""
        out: dict[str, dict[str, Any]] = {}
        for m in self.methods + (("against",) if self.against else ()):
            params: dict[str, Any] = {}
            if m in DEFAULT_PHASH_BITS:
                params["phash_bits"] = self.phash_bits_for(m)
            if m in DEFAULT_THRESHOLD:
                params["threshold"] = self.threshold_for(m)
            out[m] = params
        return out

    def recorded(self) -> dict[str, Any]:
        args = asdict(self)
        for key in ("overwrite", "progress"):
            args.pop(key)
        if args["against"]:
            args["against"] = str(Path(args["against"]).resolve())
        args["method"] = ",".join(self.methods)  # "all" and any spelling of one list: the same run
        args["resolved"] = self.resolved()
        return args


def validate(settings: DedupSettings) -> None:
    """Reject bad arguments before any work, with a message saying what to pass."""
    s = settings
    methods = parse_methods(s.method)
    if s.threshold is not None and not (0.0 < s.threshold <= 1.0):
        raise UserError(f"--threshold {s.threshold} is outside (0, 1]; it is a cosine similarity, e.g. 0.95")
    if s.keep not in KEEP_POLICIES:
        raise UserError(f"--keep {s.keep!r} is not one of {', '.join(KEEP_POLICIES)}")
    if s.phash_bits is not None and not (0 <= s.phash_bits <= MAX_PHASH_BITS):
        raise UserError(f"--phash-bits {s.phash_bits} is outside 0..{MAX_PHASH_BITS} (Hamming distance of 64-bit hashes)")
    if s.index not in INDEX_KINDS:
        raise UserError(f"--index {s.index!r} is not one of {', '.join(INDEX_KINDS)}")
    for option, value in (("--clusters", s.clusters), ("--nlist", s.nlist), ("--nprobe", s.nprobe)):
        if value is not None and value < 1:
            raise UserError(f"{option} {value} must be at least 1 (or left out for the automatic choice)")
    if s.clusters is not None and "semdedup" not in methods:
        raise UserError("--clusters applies to --method semdedup only")
    if not _NAME.match(s.name):
        raise UserError(f"--tag {s.name!r} must be letters, digits, '.', '_', '+' or '-'")


def _fingerprint(scored: ScoredPool, settings: DedupSettings, embeddings: bool) -> list:
    """What the output depends on: each input file's name, size and modification time."""
    files = [scored.scores_path(s) for s in scored.shards]
    if embeddings:
        files += [scored.embeddings_path(s) for s in scored.shards]
    if settings.against:
        against = Path(settings.against)
        files += [against] if against.is_file() else sorted(p for p in against.rglob("*") if p.is_file())
    out = []
    for path in files:
        st = path.stat()
        out.append([str(path), st.st_size, st.st_mtime_ns])
    return out


def _log(settings: DedupSettings, text: str) -> None:
    if settings.progress:
        print(text, file=sys.stderr, flush=True)


def run_dedup(pool: str | Path, settings: DedupSettings, embed_images: ImageEmbedder | None = None) -> dict[str, Any]:
    """Run one dedup; returns the summary (with "skipped": True when already complete)."""
    from curate.dedup.pool_inputs import check_embeddings, open_scored_pool, read_score_columns

    validate(settings)
    pool = Path(pool)
    scored = open_scored_pool(pool, settings.scores)
    needs_vectors = any(m in ("knn", "semdedup", "phash-knn") for m in settings.methods) or bool(settings.against)
    dim = check_embeddings(scored) if needs_vectors else None
    out_dir = pool / "dedup" / settings.name
    inputs = _fingerprint(scored, settings, needs_vectors)
    summary_path = out_dir / "summary.json"
    if summary_path.is_file() and (out_dir / "groups.parquet").is_file():
        old = json.loads(summary_path.read_text())
        if old.get("args") == settings.recorded() and old.get("inputs") == inputs and old.get("version") == FORMAT_VERSION:
            return {**old, "skipped": True}
        if not settings.overwrite:
            raise UserError(
                f"{out_dir} holds a dedup run with other arguments or older inputs; "
                "pass --overwrite to replace it, or --tag NAME to keep both"
            )
    elif out_dir.exists() and not settings.overwrite:
        raise UserError(f"{out_dir} exists but is not a finished dedup run; pass --overwrite to replace it")

    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    cols = read_score_columns(scored)
    n = scored.size
    graph = DuplicateGraph(n)
    search: dict[str, Any] = {}
    for method in settings.methods:
        t0 = time.perf_counter()
        _log(settings, f"dedup: {method} ...")
        a, b = _find_pairs(method, scored, cols, dim, settings, search)
        graph.add(a, b, method)
        timings[method] = round(time.perf_counter() - t0, 3)

    contaminated = np.zeros(n, dtype=bool)
    if settings.against:
        from curate.dedup.decontam import contaminated_mask, load_eval_embeddings
        from curate.dedup.vectors import gpu_available

        t0 = time.perf_counter()
        eval_vectors = load_eval_embeddings(settings.against, dim, embed_images)
        contaminated = contaminated_mask(scored, eval_vectors, settings.threshold_for("against"), gpu_available(), settings.progress)
        timings["against"] = round(time.perf_counter() - t0, 3)
        search["against_images"] = int(len(eval_vectors))

    from curate.dedup.keep import keep_mask

    labels = graph.components()
    gid, gsize = group_ids(labels)
    keep = keep_mask(gid, cols.uid, cols.clip_score, settings.keep, eligible=~contaminated)
    summary = _summary(settings, scored, graph, gid, gsize, keep, contaminated, search, timings, inputs)
    summary["seconds"]["total"] = round(time.perf_counter() - t_start, 3)
    _write_outputs(out_dir, cols.uid, gid, gsize, keep, graph.method_of, contaminated, summary)
    return {**summary, "skipped": False}


def _find_pairs(method: str, scored: ScoredPool, cols, dim, settings: DedupSettings, search: dict):
    from curate.dedup import hashes, vectors

    if method == "exact":
        return hashes.exact_pairs(cols.sha256)
    if method == "phash":
        return hashes.phash_pairs(cols.phash, cols.phash_valid, settings.phash_bits_for("phash"))
    if method == "phash-knn":
        from curate.dedup.phash_knn import phash_knn_pairs

        bits, threshold = settings.phash_bits_for("phash-knn"), settings.threshold_for("phash-knn")
        pairs, counts = phash_knn_pairs(scored, cols.phash, cols.phash_valid, bits, threshold, settings.progress)
        search["phash-knn"] = {"phash_bits": bits, "threshold": threshold, **counts}
        return pairs
    if method == "knn":
        threshold = settings.threshold_for("knn")
        plan = vectors.choose_plan(scored.size, threshold, settings.index, settings.nlist, settings.nprobe)
        search["knn"] = plan.as_dict()
        if plan.kind == "flat":
            return vectors.flat_pairs(scored, dim, threshold, plan.gpu, settings.progress)
        return vectors.ivf_pairs(scored, dim, threshold, plan, settings.seed, settings.progress)
    clusters = settings.clusters or vectors.default_clusters(scored.size)
    gpu = vectors.gpu_available()
    search["semdedup"] = {"clusters": min(clusters, scored.size), "gpu": gpu}
    return vectors.semdedup_pairs(scored, dim, settings.threshold_for("semdedup"), clusters, settings.seed, gpu,
                                  settings.progress)


def _summary(settings, scored, graph, gid, gsize, keep, contaminated, search, timings, inputs) -> dict[str, Any]:
    in_group = gsize > 1
    per_method = {}
    for method in settings.methods:
        code = METHOD_ORDER.index(method)
        per_method[method] = {
            "pairs": int(graph.pair_counts.get(method, 0)),
            "samples_joined": int((graph.method_of == code).sum()),
            **settings.resolved()[method],
        }
    return {
        "version": FORMAT_VERSION,
        "name": settings.name,
        "scores_tag": settings.scores,
        "args": settings.recorded(),
        "inputs": inputs,
        "samples": int(scored.size),
        "groups": int(np.unique(gid[in_group]).size),
        "duplicate_samples": int(in_group.sum()),
        "kept": int(keep.sum()),
        "removed": int((~keep).sum()),
        "removed_duplicates": int((~keep & ~contaminated).sum()),
        "contaminated": int(contaminated.sum()),
        "per_method": per_method,
        "pair_counts_exact": graph.counts_exact,
        "search": search,
        "seconds": dict(timings),
    }


def _write_outputs(out_dir: Path, uid, gid, gsize, keep, method_of, contaminated, summary) -> None:
    """Write into a temporary sibling folder, then rename it into place."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    parent = out_dir.parent
    parent.mkdir(parents=True, exist_ok=True)
    for stale in parent.glob(f".{out_dir.name}.partial-*"):  # left by a killed run
        shutil.rmtree(stale, ignore_errors=True)
    tmp = parent / f".{out_dir.name}.partial-{os.getpid()}"
    tmp.mkdir()
    names = np.array(METHOD_ORDER + (None,), dtype=object)
    method = names[np.where(gsize > 1, method_of, len(METHOD_ORDER))]
    table = pa.table({
        "uid": pa.array(uid.tolist(), pa.string()),
        "group_id": pa.array(gid, pa.int64()),
        "group_size": pa.array(gsize, pa.int64()),
        "keep": pa.array(keep, pa.bool_()),
        "method": pa.array(method.tolist(), pa.string()),
        "contaminated": pa.array(contaminated, pa.bool_()),
    })
    pq.write_table(table, tmp / "groups.parquet")
    (tmp / "summary.json").write_text(json.dumps(summary, indent=2))
    old = None
    if out_dir.exists():
        old = parent / f".{out_dir.name}.old-{os.getpid()}"
        os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
