"""Tables 5, 6 and A5 from the ``eval.json`` of several runs, as Markdown and JSON, plus the plots.

- Table 5: one row per method, two columns per backbone: Top-1 (%) over all variants and InvE (x 1e-2),
  mean +- sample std over the seeds (runs of the same backbone and method); both InvE variants get a table
  (``paper``: squared L2 of eq. 24; ``reference``: the unsquared norm of the authors' ImageNet code).
- Table 6: per backbone, one row per method: accuracy (%) at each object scale factor (mean over seeds) and
  "Overall": mean +- population std over the factors, as in the paper.
- Table A5: accuracy (%) on the unmodified images, one row per method, one column per backbone.
- Plots: per backbone, accuracy against the factor (one line per method) and the Fig. 8 curves of the chosen
  images (probability of the correct class against the factor, one line per method).

A label-free run is its own method (``dec (label-free)``), never pooled with a supervised one.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from lse_common.reports import format_mean_std, group_results, markdown_table, mean_std, write_report

from .options import METHODS

__all__ = ["NAMES", "PAPER_TABLE5", "PAPER_TABLE6", "aggregate", "markdown_tables", "method_key", "summarise"]

NAMES = {"base": "Base", "aug": "Aug", "canon": "Canon", "invl": "InvL", "dec": "DEC (ours)"}

PAPER_TABLE5 = {  # Top-1 (%), InvE (x 1e-2), from the paper's Table 5
    "ViT": {
        "base": (80.15, 8.18),
        "aug": (80.15, 8.16),
        "canon": (77.72, 10.20),
        "invl": (80.16, 8.16),
        "dec": (80.36, 8.10),
    },
    "DeiT": {
        "base": (69.06, 11.13),
        "aug": (69.06, 11.12),
        "canon": (64.79, 12.74),
        "invl": (69.06, 11.12),
        "dec": (69.27, 11.08),
    },
    "Swin": {
        "base": (77.94, 8.93),
        "aug": (77.96, 8.92),
        "canon": (74.67, 11.40),
        "invl": (77.97, 8.92),
        "dec": (78.32, 8.82),
    },
    "BEiT": {
        "base": (84.70, 6.29),
        "aug": (84.66, 6.27),
        "canon": (83.34, 8.03),
        "invl": (84.66, 6.27),
        "dec": (85.08, 6.24),
    },
}
PAPER_TABLE6 = {  # Swin, accuracy (%) at the factors 0.7, 0.8, ..., 1.3
    "base": (74.66, 76.44, 78.07, 79.55, 79.48, 78.88, 78.53),
    "aug": (74.71, 76.47, 78.07, 79.56, 79.48, 78.87, 78.57),
    "canon": (71.37, 73.28, 74.87, 76.04, 76.04, 75.79, 75.32),
    "invl": (74.73, 76.46, 78.07, 79.58, 79.48, 78.87, 78.57),
    "dec": (75.31, 77.04, 78.65, 79.86, 79.60, 79.05, 78.73),
}


def family(backbone: str) -> str | None:
    """The paper's architecture family of a timm name (``None`` for others)."""
    name = backbone.lower()
    for key, fam in (("deit", "DeiT"), ("beit", "BEiT"), ("swin", "Swin"), ("vit", "ViT")):
        if key in name:
            return fam
    return None


def method_key(result: dict[str, Any]) -> str:
    """The row a result belongs to: its method, ``<method> (label-free)`` for a label-free run."""
    return f"{result['method']} (label-free)" if result.get("label_free") else str(result["method"])


def _order(methods: set[str]) -> list[str]:
    ordered = [k for m in METHODS for k in (m, f"{m} (label-free)") if k in methods]
    return ordered + sorted(methods - set(ordered))


def _name(key: str) -> str:
    method, _, rest = key.partition(" ")
    return NAMES.get(method, method) + (f" {rest}" if rest else "")


def summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The numbers behind the tables, as a JSON-friendly dict (percent and x 1e-2 as the tables show them)."""
    rows = [{**r, "method_key": method_key(r)} for r in results]
    grouped: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(dict)
    for (backbone, key), runs in group_results(rows, keys=("backbone", "method_key")).items():
        grouped[backbone][key] = list(runs)
    table5: dict[str, Any] = {}
    table6: dict[str, Any] = {}
    tablea5: dict[str, Any] = {}
    for backbone, per in grouped.items():
        table5[backbone], table6[backbone], tablea5[backbone] = {}, {}, {}
        for key, runs in per.items():
            entry: dict[str, Any] = {"seeds": sorted(r["seed"] for r in runs), "n": len(runs)}
            for metric in ("acc", "inve_paper", "inve_reference", "acc_unmodified"):
                m, s = mean_std([r[metric] for r in runs], scale=100.0)
                entry[metric] = {"mean": m, "std": s}
            table5[backbone][key] = entry
            acc = np.mean([r["factor_acc"] for r in runs], axis=0) * 100
            table6[backbone][key] = {
                "factors": runs[0]["factors"],
                "factor_acc": acc.tolist(),
                "overall_mean": float(acc.mean()),
                "overall_std": float(acc.std()),
                "n": len(runs),
            }
            tablea5[backbone][key] = {
                **entry["acc_unmodified"],
                "n": len(runs),
                "source": runs[0].get("unmodified_source"),
            }
    return {
        "table5": table5,
        "table6": table6,
        "tableA5": tablea5,
        "runs": results,
        "notes": {
            "acc": "%",
            "inve": "x 1e-2",
            "std over seeds": "sample (n - 1)",
            "overall": "mean +- population std over the factors",
            "inve_paper": "squared L2 of eq. 24 over the factors other than 1",
            "inve_reference": "unsquared L2 over all factors, the identity's zero included (authors' code)",
        },
    }


def markdown_tables(summary: dict[str, Any]) -> str:
    """Tables 5, 6 and A5 (ours), and the paper's rows for the families present, in Markdown."""
    table5, table6, tablea5 = summary["table5"], summary["table6"], summary["tableA5"]
    backbones = list(table5)
    keys = _order({k for b in backbones for k in table5[b]})
    out: list[str] = []
    for variant, title in (
        ("inve_paper", "paper: squared L2, eq. 24"),
        ("inve_reference", "reference: unsquared L2 of the authors' code"),
    ):
        header = ["Method"] + [f"{b} {c}" for b in backbones for c in ("Acc ↑", "InvE ↓")]
        rows = []
        for k in keys:
            cells = [_name(k)]
            for b in backbones:
                e = table5[b].get(k)
                cells += (
                    ["", ""]
                    if e is None
                    else [
                        format_mean_std(e["acc"]["mean"], e["acc"]["std"], e["n"]),
                        format_mean_std(e[variant]["mean"], e[variant]["std"], e["n"], digits=3),
                    ]
                )
            rows.append(cells)
        out += [f"### Table 5: Top-1 (%) and InvE (x 1e-2, {title})\n", markdown_table(header, rows)]
    for b in backbones:
        factors = next(iter(table6[b].values()))["factors"]
        header = ["Method", *[f"{f:g}" for f in factors], "Overall"]
        rows = []
        for k in keys:
            e = table6[b].get(k)
            if e is not None:
                rows.append(
                    [
                        _name(k),
                        *[f"{a:.2f}" for a in e["factor_acc"]],
                        f"{e['overall_mean']:.2f} ± {e['overall_std']:.2f}",
                    ]
                )
        out += [f"### Table 6: accuracy (%) per object scale factor, {b}\n", markdown_table(header, rows)]
    header = ["Method", *backbones]
    rows = []
    for k in keys:
        cells = [_name(k)]
        for b in backbones:
            e = tablea5[b].get(k)
            cells.append("" if e is None else format_mean_std(e["mean"], e["std"], e["n"]))
        rows.append(cells)
    sources = {e.get("source") for b in backbones for e in tablea5[b].values()}
    out += [
        f"### Table A5: accuracy (%) on unmodified images ({', '.join(sorted(map(str, sources)))})\n",
        markdown_table(header, rows),
    ]
    families = {family(b) for b in backbones} - {None}
    if families:
        header = ["Method"] + [f"{f} {c}" for f in sorted(families) for c in ("Acc", "InvE")]
        rows = [
            [_name(m)] + [f"{v:.2f}" for f in sorted(families) for v in PAPER_TABLE5[f][m]] for m in METHODS
        ]
        out += [
            "### The paper's Table 5 (full ImageNet protocol), for reference\n",
            markdown_table(header, rows),
        ]
    return "\n".join(out)


def aggregate(results: list[dict[str, Any]], results_dir: str | Path) -> dict[str, Any]:
    """Write ``tables.md``/``tables.json`` and the plots into ``results_dir``; returns the summary with the
    list of written ``files``."""
    from .plots import plot_factor_accuracy, plot_fig8

    summary = summarise(results)
    out = Path(results_dir)
    files = write_report(out, "tables", markdown_tables(summary), summary)
    for backbone in summary["table6"]:
        files.append(
            str(
                plot_factor_accuracy(
                    summary["table6"][backbone],
                    out / f"factor_acc_{backbone}.png",
                    title=f"{backbone}: accuracy per object scale factor",
                )
            )
        )
        curves = {_name(method_key(r)): r for r in results if r["backbone"] == backbone and r.get("fig8")}
        if curves:
            files.append(str(plot_fig8(curves, out / f"fig8_{backbone}.png", title=backbone)))
    summary["files"] = files
    return summary
