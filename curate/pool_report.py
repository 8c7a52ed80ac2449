"""`curate inspect`: what a downloaded pool holds, and what went wrong, from its shard metadata."""
from __future__ import annotations

import json

from clikit.errors import UserError
from curate.download.pool import require_finished_shards
from shards.layout import Pool
from shards.storage import StoragePath, open_root, register_with_duckdb

SIDE_BINS = (0, 32, 64, 128, 256, 512, 1024, 2048, 4096)
ASPECT_BINS = (0.0, 0.5, 0.75, 0.9, 1.11, 1.33, 2.0, 4.0)


def _bin_label(bins: tuple, i: int) -> str:
    return f">={bins[i]}" if i == len(bins) - 1 else f"{bins[i]}-{bins[i + 1]}"


def _histogram(values: list[float], bins: tuple) -> dict[str, int]:
    counts = [0] * len(bins)
    for value in values:
        i = max(j for j, edge in enumerate(bins) if value >= edge) if value >= bins[0] else 0
        counts[i] += 1
    return {_bin_label(bins, i): c for i, c in enumerate(counts)}


def inspect_pool(pool: str | StoragePath, placeholder_min_urls: int = 5) -> dict:
    """Counts, success rate, failures by reason, histograms, duplicate URLs and placeholder images."""
    import duckdb

    pool = open_root(pool)
    layout = Pool(pool)
    if not pool.is_dir():
        raise UserError(f"{pool} is not a pool folder (run `curate download INPUT {pool}` first)")
    finished = require_finished_shards(layout)
    files = [str(layout.shard_parquet(s)) for s in finished]
    con = duckdb.connect()
    register_with_duckdb(con, pool)
    con.read_parquet(files, union_by_name=True).create_view("pool_rows")
    total, success = con.sql("SELECT count(*), count(*) FILTER (status = 'success') FROM pool_rows").fetchall()[0]
    reasons = dict(con.sql(
        "SELECT coalesce(fail_reason, status), count(*) AS n FROM pool_rows WHERE status != 'success' GROUP BY 1 ORDER BY n DESC, 1"
    ).fetchall())
    sizes = con.sql(
        "SELECT original_width, original_height FROM pool_rows WHERE status = 'success' AND original_width > 0 AND original_height > 0"
    ).fetchall()
    duplicate_urls = con.sql(
        "SELECT count(*) FROM (SELECT url FROM pool_rows GROUP BY url HAVING count(*) > 1)"
    ).fetchall()[0][0]
    rows_with_duplicate_url = con.sql(
        "SELECT coalesce(sum(n), 0) FROM (SELECT count(*) AS n FROM pool_rows GROUP BY url HAVING count(*) > 1)"
    ).fetchall()[0][0]
    has_sha256 = "sha256" in con.sql("SELECT * FROM pool_rows LIMIT 0").columns
    placeholders = [] if not has_sha256 else con.sql(
        """SELECT sha256, count(DISTINCT url) AS urls, min(url) AS example_url
           FROM pool_rows WHERE status = 'success' AND sha256 IS NOT NULL
           GROUP BY sha256 HAVING count(DISTINCT url) >= $min ORDER BY urls DESC, sha256""",
        params={"min": placeholder_min_urls},
    ).fetchall()
    pool_json = layout.pool_json
    return {
        "pool": str(pool),
        "shards": len(finished),
        "samples": total,
        "success": success,
        "failed": total - success,
        "success_rate": round(success / total, 4) if total else 0.0,
        "failures_by_reason": reasons,
        "width_histogram": _histogram([w for w, _ in sizes], SIDE_BINS),
        "height_histogram": _histogram([h for _, h in sizes], SIDE_BINS),
        "aspect_histogram": _histogram([w / h for w, h in sizes], ASPECT_BINS),
        "duplicate_urls": duplicate_urls,
        "rows_with_duplicate_url": int(rows_with_duplicate_url),
        "placeholder_images": [
            {"sha256": sha, "urls": urls, "example_url": example} for sha, urls, example in placeholders
        ],
        "source": json.loads(pool_json.read_text()).get("source") if pool_json.exists() else None,
    }


def format_report(report: dict) -> str:
    lines = [
        f"pool {report['pool']}: {report['samples']} samples in {report['shards']} shards",
        f"  success {report['success']} ({report['success_rate']:.1%}), failed {report['failed']}",
    ]
    if report["failures_by_reason"]:
        lines.append("  failures by reason:")
        lines += [f"    {reason:<20} {n}" for reason, n in report["failures_by_reason"].items()]
    for title, key in (("width (px)", "width_histogram"), ("height (px)", "height_histogram"), ("aspect w/h", "aspect_histogram")):
        hist = report[key]
        peak = max(hist.values()) or 1
        lines.append(f"  {title} of downloaded originals:")
        lines += [f"    {label:>10} {n:>7} {'#' * round(30 * n / peak)}" for label, n in hist.items()]
    lines.append(f"  duplicate URLs: {report['duplicate_urls']} ({report['rows_with_duplicate_url']} rows)")
    if report["placeholder_images"]:
        lines.append(f"  placeholder images (same bytes for many URLs): {len(report['placeholder_images'])}")
        lines += [f"    {p['sha256'][:16]}... served for {p['urls']} URLs, e.g. {p['example_url']}" for p in report["placeholder_images"][:10]]
    else:
        lines.append("  placeholder images: none")
    return "\n".join(lines)
