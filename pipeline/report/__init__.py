"""`train report DIR`: a sweep's results plotted, fitted and summarised.

    DIR/report.md      findings, paper claims, fits, crossings, best configuration per budget
    DIR/report.html    the same, one self-contained file (plots embedded as base64 PNG)
    DIR/plots/*.png    accuracy vs FLOPs / samples seen / slice fraction, per experiment
"""
from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from pipeline.report import datacomp
from pipeline.report.data import Experiment, chance_column, fmt_budget, group, metric_label, pp, resolve_metric
from pipeline.report.findings import best_at, best_sentence, crossings, paper_claims, seeds_text
from pipeline.report.fit import Fit, c0_of, fit_line
from pipeline.report.plots import plot_flops, plot_fraction, plot_samples
from pipeline.sweep.results import read_results
from shards.atomic import write_text_atomic


def _best_table(exp: Experiment) -> list[list[str]]:
    rows = [["budget", "best", f"{metric_label(exp.metric)} (mean)", "seeds", "runner-up", "margin", "samples seen", "epochs"]]
    for budget in exp.budgets:
        b = best_at(exp, budget)
        if b is None:
            continue
        epochs = sum(b.point.epochs) / len(b.point.epochs)
        rows.append([fmt_budget(exp, budget), b.best.label, f"{b.point.mean:.1%}", seeds_text(b.point),
                     b.runner.label if b.runner else "-", pp(b.margin) if b.runner else "-",
                     f"{b.point.x_samples:,.0f}", f"{epochs:.2f}"])
    return rows


def _chance(rows: list[dict[str, Any]], metric: str) -> float | None:
    column = chance_column(metric)
    values = [r[column] for r in rows if r.get(column)]
    return values[0] if values else None


def build(out: Path, metric: str | None = None) -> dict[str, Any]:
    """Everything the report says about `metric` (a results column or a suite task's name;
    default: the suite's average, else zero-shot top-1), computed from DIR/results.parquet;
    plots written to DIR/plots."""
    rows, meta = read_results(out)
    metric = resolve_metric(rows, metric)
    experiments = group(rows, meta, metric)
    chance = _chance(rows, metric)
    sections, pngs = [], []
    for exp in experiments:
        c0 = c0_of(exp.lines)
        all_fits: dict[str, Fit | None] = {line.label: fit_line(line, c0) for line in exp.lines}
        fits = {label: fit if fit and fit.determined else None for label, fit in all_fits.items()}
        plots = [plot_flops(exp, fits, out / "plots", chance), plot_samples(exp, out / "plots", chance)]
        fraction = plot_fraction(exp, out / "plots", chance)
        plots += [fraction] if fraction else []
        pngs += plots
        sections.append({
            "exp": exp, "plots": plots,
            "best": [best_sentence(exp, b) for b in (best_at(exp, x) for x in exp.budgets) if b],
            "crossings": crossings(exp, fits),
            "fits": [(label, _fit_text(fit)) for label, fit in all_fits.items()],
            "table": _best_table(exp),
            "datacomp": ({"tables": datacomp.tables(exp, rows), "orderings": datacomp.orderings(exp)}
                         if datacomp.has_recipe_arms(exp) else None),
        })
    failed = [r for r in rows if r["status"] != "ok"]
    return {"meta": meta, "rows": rows, "sections": sections, "claims": paper_claims(experiments, rows, chance, metric),
            "failed": failed, "pngs": pngs, "chance": chance, "metric": metric}


def _md_table(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows[1:]])


def render_md(report: dict[str, Any], image=lambda p: f"![{p.stem}](plots/{p.name})") -> str:
    """report.md; `image` turns a PNG path into the markup that shows it (HTML embeds it)."""
    meta, rows = report["meta"], report["rows"]
    ok = [r for r in rows if r["status"] == "ok"]
    wall = sum(r["wall_s"] or 0 for r in rows)
    out = [f"# Sweep report: {meta.get('name', '?')}", "",
           f"{len(ok)} of {len(rows)} cells ok on pool `{meta.get('pool')}` (scores `{meta.get('scores')}`, dedup "
           f"`{meta.get('dedup')}`), eval `{meta.get('eval')}`" + (f", suite `{meta['eval_suite']}`" if meta.get("eval_suite")
                                                              else "") + f"; {wall / 60:.1f} min of cell time. "
           f"Metric: {metric_label(report['metric'])} (`{report['metric']}`"
           + (f", chance {report['chance']:.1%}" if report["chance"] else "") + "; `train report --metric` picks "
           "another). Seed spread = max - min over seeds. Two arms are told apart only when their bands (each "
           "seed's bootstrap 95% interval and the seed values) do not overlap; otherwise a finding is \"within "
           "noise\". Every figure comes from results.parquet, whose run_dir column links each cell's run.", ""]
    if report["claims"]:
        out += ["## Scaling (Down) CLIP findings, here", ""]
        out += [f"- **{c['claim']}**: {c['verdict']}. {c['evidence']}" for c in report["claims"]] + [""]
    for sec in report["sections"]:
        exp = sec["exp"]
        varies = ", ".join(v.removeprefix("cfg_").replace("_label", "") for v in exp.varies) or "nothing (one line)"
        out += [f"## Experiment `{exp.name}` (varies: {varies}; {len(exp.rows)} cells)", ""]
        out += [f"- {s}" for s in sec["best"]] + [f"- {s}" for s in sec["crossings"]] + [""]
        out += ["Best configuration at each budget:", "", _md_table(sec["table"]), ""]
        if sec["datacomp"]:
            out += ["DataComp's baselines (Table 3's shape): kept = share of the no-filter arm's samples; "
                    "band = seed values and their bootstrap 95% intervals; eval top-1 = the eval folder "
                    "(the pool's own classes, the ImageNet-like task); then each suite task's headline.", ""]
            for budget, table in sec["datacomp"]["tables"]:
                out += [f"At {budget}:", "", _md_table(table), ""]
            out += ["DataComp's orderings, here:", ""]
            out += [f"- **{o.claim}**: {o.verdict}. {o.evidence}" for o in sec["datacomp"]["orderings"]] + [""]
        out += ["Saturating power law per line, top-1 = a - b (C/C0)^-c, C0 = geometric-mean budget "
                "(± one standard error):", ""]
        out += [f"- {label}: {text}" for label, text in sec["fits"]] + [""]
        out += [image(p) for p in sec["plots"]] + [""]
    if report["failed"]:
        out += ["## Failed cells", ""] + [f"- `{r['cell']}`: {r['error']}" for r in report["failed"]] + [""]
    return "\n".join(out)


def render_html(report: dict[str, Any]) -> str:
    """One self-contained HTML page: the markdown's content with the PNGs inlined as base64."""
    marker = "\x00IMG:"
    text = render_md(report, image=lambda p: f"{marker}{p}")
    body = []
    in_list = False
    for line in text.splitlines():
        if line.startswith("- ") != in_list:
            body.append("<ul>" if not in_list else "</ul>")
            in_list = not in_list
        if line.startswith(marker):
            data = base64.b64encode(Path(line[len(marker):]).read_bytes()).decode()
            body.append(f'<p><img alt="{html.escape(Path(line[len(marker):]).stem)}" src="data:image/png;base64,{data}"></p>')
        elif line.startswith("## ") or line.startswith("# "):
            level = 2 if line.startswith("## ") else 1
            body.append(f"<h{level}>{_inline(line[level + 1:])}</h{level}>")
        elif line.startswith("|---"):
            continue
        elif line.startswith("| "):
            cells = [c.strip() for c in line.strip("|").split("|")]
            tag = "th" if body and not body[-1].startswith("<tr") else "td"
            body.append("<tr>" + "".join(f"<{tag}>{_inline(c)}</{tag}>" for c in cells) + "</tr>")
        elif line.startswith("- "):
            body.append(f"<li>{_inline(line[2:])}</li>")
        elif line:
            body.append(f"<p>{_inline(line)}</p>")
    page = "\n".join(_tables(body))
    style = ("body{font-family:sans-serif;max-width:60em;margin:2em auto;line-height:1.4}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px}img{max-width:100%}")
    return f"<!doctype html><html><head><meta charset='utf-8'><title>sweep report</title><style>{style}</style></head><body>{page}</body></html>"


def _inline(text: str) -> str:
    import re

    text = html.escape(text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


def _tables(body: list[str]) -> list[str]:
    out, inside = [], False
    for item in body:
        if item.startswith("<tr") != inside:
            out.append("<table>" if not inside else "</table>")
            inside = not inside
        out.append(item)
    return out + (["</table>"] if inside else [])


def write_report(out: str | Path, metric: str | None = None) -> dict[str, Any]:
    """Write DIR/report.md, DIR/report.html and DIR/plots/*.png on `metric` (see build);
    returns their paths, the claims and the findings."""
    out = Path(out)
    report = build(out, metric)
    write_text_atomic(out / "report.md", render_md(report))
    write_text_atomic(out / "report.html", render_html(report))
    findings = [s for sec in report["sections"] for s in sec["best"] + sec["crossings"]]
    return {"md": out / "report.md", "html": out / "report.html", "pngs": report["pngs"], "claims": report["claims"],
            "findings": findings, "metric": report["metric"]}


__all__ = ["write_report", "build", "render_md", "render_html"]


def _fit_text(fit: Fit | None) -> str:
    if fit is None:
        return "not fitted (fewer than 3 budgets or no convergence)"
    if not fit.determined:
        return f"not determined by its runs, so not drawn or used ({fit.text()})"
    return fit.text()
