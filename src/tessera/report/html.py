"""``tessera report RUN_DIR``: one self-contained HTML page (figures embedded as PNG) and its Markdown twin for a
run of ``tessera run`` — the pattern library and its use per layer, kept weights per layer, accuracy before and
after (and the accuracy–compression curve across the runs beside it), per-layer latency dense vs compiled, and
every graph node with where it runs and why."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import torch

from tessera.errors import TesseraError
from tessera.report.figures import pyplot, save_figure
from tessera.text import markdown_table


def _kept_figure(weights: dict[str, torch.Tensor], path: Path) -> Path:
    plt = pyplot()
    names = list(weights)
    kept = [float((w != 0).float().mean()) for w in weights.values()]
    fig, ax = plt.subplots(figsize=(7, 0.8 + 0.28 * len(names)))
    ax.barh(range(len(names)), kept, color="#3a7")
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("kept weights (fraction)")
    ax.grid(axis="x", alpha=0.3)
    return save_figure(fig, path, dpi=110)


def _accuracy_figure(summary: dict, path: Path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4, 3))
    vals = [summary["baseline_acc"], summary["pruned_acc"]]
    ax.bar(["dense", f"pruned ({summary['conv_compression']:.2f}x)"], vals, color=["#888", "#37a"])
    for i, v in enumerate(vals):
        ax.text(i, v, f"{v:.2f}%", ha="center", va="bottom", fontsize=8)
    ax.set_ylim(max(0.0, min(vals) - 10), 100)
    ax.set_ylabel("test accuracy %")
    return save_figure(fig, path, dpi=110)


def _latency_figure(layers: list[dict], path: Path) -> Path | None:
    rows = [r for r in layers if r.get("torch_ms") and r.get("sparse_ms")]
    if not rows:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 0.8 + 0.3 * len(rows)))
    y = torch.arange(len(rows)).float()
    ax.barh(y - 0.2, [r["torch_ms"] for r in rows], height=0.4, label="torch dense", color="#888")
    ax.barh(y + 0.2, [r["sparse_ms"] for r in rows], height=0.4, label="tessera kernel", color="#c63")
    ax.set_yticks(y.tolist(), [r["name"] for r in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("ms per call (tuning measurement, this machine)")
    ax.legend(fontsize=7)
    ax.grid(axis="x", alpha=0.3)
    return save_figure(fig, path, dpi=110)


def write_report(run_dir: str | Path) -> Path:
    """Write ``report.html`` and ``report.md`` (figures in ``figures/``) for a ``tessera run`` folder."""
    from tessera.models import load_model
    from tessera.report.figures import accuracy_compression_figure, library_figure
    from tessera.sparsity import PatternLibrary

    d = Path(run_dir)
    try:
        summary = json.loads((d / "summary.json").read_text())
        compiled = json.loads((d / "compiled.json").read_text())
    except (OSError, ValueError):
        raise TesseraError(f"{d} is not a finished `tessera run` folder (summary.json / compiled.json missing "
                           "or unreadable); run the recipe first") from None
    model, meta = load_model(d / "model.safetensors")
    weights = {n: m.weight.detach() for n, m in model.named_modules()
               if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)}
    figs: list[tuple[str, Path]] = []
    libs = meta.get("libraries") or {}
    if libs:
        first = next(iter(libs.values()))
        same = [n for n, v in libs.items() if v == first]
        lib = PatternLibrary.from_json(json.dumps(first))
        masks = {n: weights[n] != 0 for n in same if n in weights}
        figs.append(("pattern library and its use per layer", library_figure(lib, masks, d / "figures/library.png")))
    figs.append(("kept weights per layer", _kept_figure(weights, d / "figures/kept.png")))
    figs.append(("accuracy before / after", _accuracy_figure(summary, d / "figures/accuracy.png")))
    others = [json.loads(p.read_text()) for p in sorted(d.parent.glob("*/summary.json"))]
    if len(others) > 1:
        points = [{"label": o["recipe"], "compression": o["conv_compression"], "acc": o["pruned_acc"]}
                  for o in others]
        figs.append(("accuracy vs compression, runs beside this one",
                     accuracy_compression_figure(points, d / "figures/curve.png", summary["baseline_acc"])))
    lat = _latency_figure(compiled["layers"], d / "figures/latency.png")
    if lat:
        figs.append(("per-layer latency, dense vs compiled", lat))
    speed = [[k, f"{v:.3f}", f"{summary['ms']['torch'] / v:.2f}x"] for k, v in summary["ms"].items()]
    nodes = compiled["nodes"]
    _write_html(d / "report.html", summary, compiled, figs, speed, nodes)
    md_figs = "\n\n".join(f"![{t}]({p.relative_to(d)})" for t, p in figs)
    (d / "report.md").write_text(f"""# {summary['recipe']}

Accuracy: dense {summary['baseline_acc']:.2f}% -> pruned {summary['pruned_acc']:.2f}%; conv weights
{summary['conv_compression']:.2f}x fewer. Execution: {compiled['execution']}

{markdown_table(["runtime", "ms", "vs torch"], speed)}

{md_figs}

## Every graph node

{markdown_table(["node", "op", "runs"], nodes)}
""")
    return d / "report.html"


def _write_html(path: Path, summary: dict, compiled: dict, figs, speed, nodes) -> None:
    def table(head, rows):
        th = "".join(f"<th>{html.escape(str(h))}</th>" for h in head)
        trs = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
        return f"<table><tr>{th}</tr>{trs}</table>"

    imgs = "".join(f"<figure><img alt='{html.escape(t)}' src='data:image/png;base64,"
                   f"{base64.b64encode(p.read_bytes()).decode()}'><figcaption>{html.escape(t)}</figcaption></figure>"
                   for t, p in figs)
    path.write_text(f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(summary['recipe'])} — tessera</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}} table{{border-collapse:collapse;font-size:12px}}
td,th{{border:1px solid #ccc;padding:2px 6px;text-align:left}} figure{{display:inline-block;margin:1em}}
img{{max-width:520px}}</style></head>
<body><h1>{html.escape(summary['recipe'])}</h1>
<p>Accuracy: dense <b>{summary['baseline_acc']:.2f}%</b> → pruned <b>{summary['pruned_acc']:.2f}%</b>; conv weights
<b>{summary['conv_compression']:.2f}x</b> fewer. Batch {summary['input_shape'][0]}, {summary['threads']} threads.</p>
{table(["runtime", "ms per call", "vs torch"], speed)}
<p>Execution: {html.escape(compiled['execution'])}</p>
{imgs}
<h2>Every graph node and where it runs</h2>
{table(["node", "op", "runs"], nodes)}
<script>
window.addEventListener("load", () => {{
  const imgs = [...document.images];
  document.title = "figures " + imgs.filter(i => i.complete && i.naturalWidth > 0).length + "/" + imgs.length;
}});
</script>
</body></html>
""")
