"""`OUTDIR/report.html` and `OUTDIR/report.md`: every item with its segments, and how fast the run went.

Each item shows its picture (`report/items/<slug>.png`: the original image or tile mosaic, then up to 10
segments, best scores first, each on its own copy of the image) or, for a failed item, its error.
Plots (PNG, matplotlib): `report/throughput.png` (items/s over the latest run, and items done) and
`report/stages.png` (mean seconds per item in each stage).
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np

STAGES = ("load", "embed", "decode", "post", "write")
THROUGHPUT = "report/throughput.png"
STAGES_PNG = "report/stages.png"


def run_rates(records: list[dict], t0: float, window: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """(t, rate): seconds since `t0` of each completion in `records` (sorted by `t_end`) and the items/s over
    the last `window` completions (over all completions so far for the first ones)."""
    t = np.sort(np.array([r["t_end"] for r in records], np.float64)) - t0
    rate = np.full(len(t), np.nan)
    for k in range(len(t)):
        j = max(0, k - window)
        n, span = (k - j, t[k] - t[j]) if k > j else (1, t[k])
        if span > 0:
            rate[k] = n / span
    return t, rate


def stage_means(records: list[dict]) -> dict[str, float]:
    """Mean seconds per item of each stage over `records` (stages no record has are left out)."""
    out = {}
    for s in STAGES:
        values = [r["timings"][s] for r in records if s in r.get("timings", {})]
        if values:
            out[s] = float(np.mean(values))
    return out


def _plots(outdir: Path, run: list[dict], t0: float) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    (outdir / "report").mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(9, 3.2), dpi=100)
    a1, a2 = fig.subplots(1, 2)
    t, rate = run_rates(run, t0)
    a1.plot(t, rate, marker="o", ms=3)
    a1.set_xlabel("seconds since the run started")
    a1.set_ylabel("items/s (last 5 items)")
    a1.set_title("throughput")
    a1.set_ylim(bottom=0)
    a1.set_xlim(left=0)
    a2.step(np.r_[0.0, t], np.arange(len(t) + 1), where="post")
    a2.set_xlim(left=0)
    a2.set_xlabel("seconds since the run started")
    a2.set_ylabel("items finished this run")
    a2.set_title("progress")
    fig.tight_layout()
    fig.savefig(outdir / THROUGHPUT)

    means = stage_means([r for r in run if r["status"] == "done"])
    fig = Figure(figsize=(6, 3), dpi=100)
    ax = fig.subplots()
    names = list(means)
    ax.barh(names[::-1], [means[n] for n in names][::-1])
    ax.set_xlabel("mean seconds per item")
    ax.set_title("time per stage")
    fig.tight_layout()
    fig.savefig(outdir / STAGES_PNG)


def write_report(outdir: Path, items: list[tuple[str, str]], records: dict, run: dict) -> tuple[Path, Path]:
    """Write report.html, report.md and the plots.

    `items`: (item id, kind) of the job in input order; `records`: item id → last manifest record;
    `run`: {"run_id", "t_start", "t_end", "executor", "workers", "model", "input"} of the run just finished.
    """
    outdir = Path(outdir)
    this_run = [r for r in records.values() if r.get("run") == run["run_id"]]
    _plots(outdir, this_run, run["t_start"])
    done = [i for i, _ in items if records.get(i, {}).get("status") == "done"]
    failed = [i for i, _ in items if records.get(i, {}).get("status") == "failed"]
    segments = sum(records[i].get("n_segments", 0) for i in done)
    wall = max(run["t_end"] - run["t_start"], 1e-9)
    rate = len(this_run) / wall
    summary = [
        ("input", str(run.get("input", ""))), ("executor", f"{run['executor']} ({run['workers']} workers)"),
        ("model", str(run.get("model", ""))), ("items", str(len(items))), ("done", str(len(done))),
        ("failed", str(len(failed))), ("segments", str(segments)),
        ("this run", f"{len(this_run)} items in {wall:.1f} s = {rate:.2f} items/s"),
    ]
    md = ["# samgis batch report", "", "| | |", "|---|---|"]
    md += [f"| {k} | {v} |" for k, v in summary]
    md += ["", f"![throughput]({THROUGHPUT})", "", f"![time per stage]({STAGES_PNG})", "", "## Items", ""]
    h = ["<!doctype html><html><head><meta charset='utf-8'><title>samgis batch report</title><style>",
         "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
         "padding:2px 8px;text-align:left}section.item{margin:1.5em 0}.failed h3{color:#b00}"
         "img{max-width:100%}</style></head><body><h1>samgis batch report</h1><table>"]
    h += [f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in summary]
    h += ["</table>", f"<h2>Throughput</h2><img src='{THROUGHPUT}' alt='throughput'>",
          f"<img src='{STAGES_PNG}' alt='time per stage'>", "<h2>Items</h2>"]
    for item_id, kind in items:
        rec = records.get(item_id)
        status = "pending" if rec is None else rec["status"]
        name = html.escape(item_id)
        if status == "done":
            n = rec.get("n_segments", 0)
            shown = min(n, 10)
            line = f"{kind}, {n} segments" + (f" (best {shown} shown)" if n > shown else "")
            md += [f"### {item_id}", "", line, ""]
            h += [f"<section class='item done'><h3>{name}</h3><p>{html.escape(line)}</p>"]
            if rec.get("preview"):
                md += [f"![{item_id}]({rec['preview']})", ""]
                h += [f"<img src='{html.escape(rec['preview'])}' alt='{name}'>"]
            h += ["</section>"]
        else:
            err = rec.get("error", "") if rec else "not processed"
            stage = f" in stage {rec['stage']}" if rec and rec.get("stage") else ""
            md += [f"### {item_id}", "", f"**{status}**{stage}: {err}", ""]
            h += [f"<section class='item {status}'><h3>{name}</h3><p><b>{status}</b>{html.escape(stage)}: "
                  f"{html.escape(err)}</p></section>"]
    h += ["</body></html>"]
    html_path, md_path = outdir / "report.html", outdir / "report.md"
    html_path.write_text("\n".join(h), encoding="utf-8")
    md_path.write_text("\n".join(md) + "\n", encoding="utf-8")
    return html_path, md_path
