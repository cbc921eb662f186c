"""Tables 2 and 3 from the ``eval.json`` of several runs, as Markdown and JSON, plus their plots.

A row is a run's `row_name` (its method, or ``aug_continued`` for an aug run fine-tuned from another, and
``dec_ce`` / ``stn_ce`` for a DEC or STN trained on the task loss alone), stored as ``row`` in its result.

- Table 2: one row per method, two columns per backbone: Acc (%) and InvE (x 1e-2), mean +- sample std
  over the seeds (runs of the same backbone and method). Both InvE variants get a table: ``paper``
  (squared L2, eq. 24) and ``reference`` (relative L2, the authors' code).
- Table 3: per backbone, one row per method: accuracy (%) per digit-scale bucket (mean over seeds) and
  "Overall": mean +- population std over the buckets, as in the paper.
- Paired differences: every row against ``aug``, ``aug_continued`` (the control with the same budget) and
  ``invl`` on the same backbone and seed, mean +- sample std over the seeds, with the number of seeds in
  which the row is better.
- What the canonicalizers do (rows with canonicalizers, from their results' ``canonicalizer`` entries): the
  size of their warps on the test scenes and the element-equivariance error of eq. 5, uniform and
  content-weighted, mean +- sample std over the seeds, so that one that stays at the identity shows.
- Plots: per backbone, accuracy against the common digit factor (``curve_scales``) and against the
  buckets, one line per method (mean and std over seeds).
"""

from __future__ import annotations

import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from lse_common.reports import format_mean_std, group_results, mean_std, paired_differences, write_report

from .options import ROWS

__all__ = ["PAPER_TABLE2", "PAPER_TABLE3", "aggregate", "markdown_tables"]

NAMES = {
    "aug": "Aug",
    "aug_continued": "Aug continued",
    "canon": "Canon",
    "invl": "InvL",
    "optim": "Optim",
    "dec_ce": "DEC, CE only (paper's Ours)",
    "dec": "DEC + consistency",
    "dec_eq": "DEC + element equivariance (eq. 5)",
    "stn_ce": "STN (H once), CE only",
    "stn": "STN (H once) + consistency",
    "stn_eq": "STN (H once) + element equivariance",
}
#: The ``canonicalizer`` entries of a result, with their table headers.
CANON_KEYS = {
    "warp_log_scale_mean": "mean abs log slope",
    "warp_log_scale_max": "max abs log slope",
    "equ_elem": "equ_elem (uniform)",
    "equ_elem_content": "equ_elem (content)",
}
#: The rows the paired differences are taken against (those present).
REFERENCES: tuple[str, ...] = ("aug", "aug_continued", "invl")
#: The paper's rows for our rows.
PAPER_ROWS = {"aug": "aug", "canon": "canon", "invl": "invl", "dec_ce": "dec"}

PAPER_TABLE2 = {  # Acc (%), InvE (x 1e-2), from the paper's Table 2
    "ResNet": {"aug": (93.09, 13.71), "canon": (94.22, 13.84), "invl": (93.67, 13.47), "dec": (96.09, 6.13)},
    "ViT": {"aug": (91.23, 13.33), "canon": (93.73, 12.32), "invl": (94.79, 8.17), "dec": (95.64, 5.04)},
    "DeiT": {"aug": (90.91, 16.17), "canon": (95.01, 7.04), "invl": (94.06, 8.04), "dec": (96.46, 6.02)},
    "Swin": {"aug": (94.26, 5.44), "canon": (95.67, 4.27), "invl": (94.78, 3.89), "dec": (96.91, 2.08)},
    "BEiT": {"aug": (94.70, 9.69), "canon": (95.92, 5.07), "invl": (95.26, 6.49), "dec": (97.05, 4.13)},
    "DINOv2": {"aug": (95.80, 7.47), "canon": (96.63, 6.00), "invl": (96.66, 5.21), "dec": (97.90, 2.62)},
}
PAPER_TABLE3 = {  # Swin, accuracy (%) in the buckets [0.4, 1], [1, 2], [2, 3]
    "aug": (91.64, 96.32, 93.84),
    "canon": (90.16, 95.39, 90.54),
    "invl": (91.98, 96.26, 93.88),
    "dec": (95.14, 97.81, 96.64),
}


def family(backbone: str) -> str | None:
    """The paper's architecture family of a timm name (``None`` for others)."""
    name = backbone.lower()
    for key, fam in (
        ("dinov2", "DINOv2"),
        ("deit", "DeiT"),
        ("beit", "BEiT"),
        ("swin", "Swin"),
        ("vit", "ViT"),
        ("resnet", "ResNet"),
    ):
        if key in name:
            return fam
    return None


def _by_row(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The results with ``method`` set to their row (results stored without one keep their method)."""
    return [{**r, "method": r.get("row", r["method"])} for r in results]


def _group(results: list[dict[str, Any]]) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """`lse_common.reports.group_results` as backbone -> row -> runs."""
    grouped: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(dict)
    for (backbone, method), runs in group_results(_by_row(results)).items():
        grouped[backbone][method] = list(runs)
    return grouped


def summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The numbers behind the tables, as a JSON-friendly dict."""
    grouped = _group(results)
    table2: dict[str, Any] = {}
    table3: dict[str, Any] = {}
    for backbone, per in grouped.items():
        table2[backbone] = {}
        table3[backbone] = {}
        for method, runs in per.items():
            entry = {"seeds": sorted(r["seed"] for r in runs), "n": len(runs)}
            for key in ("acc", "inve_paper", "inve_reference", "acc_rescaled"):
                mean, std = mean_std([r[key] for r in runs], scale=100.0)
                entry[key] = {"mean": mean, "std": std}
            table2[backbone][method] = entry
            buckets = np.mean([r["bucket_acc"] for r in runs], axis=0) * 100
            table3[backbone][method] = {
                "edges": runs[0]["bucket_edges"],
                "bucket_acc": buckets.tolist(),
                "overall_mean": float(buckets.mean()),
                "overall_std": float(buckets.std()),
                "n": len(runs),
            }
    canon: dict[str, Any] = {}
    for backbone, per in grouped.items():
        for method, runs in per.items():
            probes = [r["canonicalizer"] for r in runs if r.get("canonicalizer")]
            if not probes:
                continue
            entry = {"n": len(probes)}
            for key in CANON_KEYS:
                values = [p[key] for p in probes if p.get(key) is not None]
                if values:
                    mean, std = mean_std(values)
                    entry[key] = {"mean": mean, "std": std, "n": len(values)}
            canon.setdefault(backbone, {})[method] = entry
    paired: dict[str, Any] = {}
    rows = _by_row(results)
    present = {r["method"] for r in rows}
    for reference in (ref for ref in REFERENCES if ref in present):
        for key in ("acc", "inve_paper"):
            diffs = paired_differences(rows, key, reference=reference, scale=100.0)
            for (backbone, method), d in diffs.items():
                paired.setdefault(reference, {}).setdefault(backbone, {}).setdefault(method, {})[key] = d
    return {
        "table2": table2,
        "table3": table3,
        "canonicalizers": canon,
        "paired": paired,
        "runs": results,
        "notes": {
            "acc": "%",
            "inve": "x 1e-2",
            "std over seeds": "sample (n - 1)",
            "overall": "mean +- population std over the buckets",
            "paired": "method - reference on the same backbone and seed, mean +- sample std over seeds",
        },
    }


def markdown_tables(summary: dict[str, Any]) -> str:
    """Tables 2 and 3 (ours), and the paper's rows for the families present, in Markdown."""
    table2, table3 = summary["table2"], summary["table3"]
    backbones = list(table2)
    methods = [m for m in ROWS if any(m in table2[b] for b in backbones)]
    lines: list[str] = []
    for variant, title in (
        ("inve_paper", "paper: squared L2, eq. 24"),
        ("inve_reference", "reference: relative L2 of the authors' code"),
    ):
        lines.append(f"### Table 2: Acc (%) and InvE (x 1e-2, {title})\n")
        head = "| Method | " + " | ".join(f"{b} Acc ↑ | {b} InvE ↓" for b in backbones) + " |"
        lines += [head, "|---|" + "---:|---:|" * len(backbones)]
        for m in methods:
            cells = []
            for b in backbones:
                e = table2[b].get(m)
                if e is None:
                    cells += ["", ""]
                else:
                    cells += [
                        format_mean_std(e["acc"]["mean"], e["acc"]["std"], e["n"]),
                        format_mean_std(e[variant]["mean"], e[variant]["std"], e["n"]),
                    ]
            lines.append(f"| {NAMES[m]} | " + " | ".join(cells) + " |")
        seeds = {b: max(e["n"] for e in table2[b].values()) for b in backbones}
        lines.append("\nSeeds per cell: " + ", ".join(f"{b}: {n}" for b, n in seeds.items()) + "\n")
    for b in backbones:
        edges = next(iter(table3[b].values()))["edges"]
        labels = [f"[{edges[i]:g}, {edges[i + 1]:g}]" for i in range(len(edges) - 1)]
        lines.append(f"### Table 3: accuracy (%) per digit-scale bucket, {b}\n")
        lines += ["| Method | " + " | ".join(labels) + " | Overall |", "|---|" + "---:|" * (len(labels) + 1)]
        for m in methods:
            e = table3[b].get(m)
            if e is None:
                continue
            cells = [f"{a:.2f}" for a in e["bucket_acc"]] + [
                f"{e['overall_mean']:.2f} ± {e['overall_std']:.2f}"
            ]
            lines.append(f"| {NAMES[m]} | " + " | ".join(cells) + " |")
        lines.append("")
    canon = summary.get("canonicalizers", {})
    if canon:
        lines.append(
            "### What the canonicalizers do on the test scenes (mean ± std over seeds): warp size "
            "|log slope| (0: the identity) and the element-equivariance error of eq. 5 (0: equivariant, "
            "1: ignores the warp; content: weighted to where a warp is visible)\n"
        )
        lines += [
            "| Backbone | Method | " + " | ".join(CANON_KEYS.values()) + " | n |",
            "|---|---|" + "---:|" * (len(CANON_KEYS) + 1),
        ]
        for b, per_method in canon.items():
            for m in methods:
                e = per_method.get(m)
                if e is None:
                    continue
                cells = [
                    format_mean_std(e[k]["mean"], e[k]["std"], e[k]["n"], digits=3) if k in e else ""
                    for k in CANON_KEYS
                ]
                lines.append(f"| {b} | {NAMES[m]} | " + " | ".join(cells) + f" | {e['n']} |")
        lines.append("")
    for reference, per_backbone in summary.get("paired", {}).items():
        lines.append(
            f"### Paired differences against {NAMES[reference]} (same backbone and seed; Acc in points, "
            "InvE x 1e-2, mean ± std over seeds, pairs with a gain)\n"
        )
        lines += ["| Backbone | Method | Δ Acc | Δ InvE | n |", "|---|---|---:|---:|---:|"]
        for b, per_method in per_backbone.items():
            for m in methods:
                d = per_method.get(m)
                if d is None or m == "aug":  # every method is fine-tuned from aug: aug is no contender
                    continue
                acc, inv = d["acc"], d["inve_paper"]
                n = acc["n"]
                acc_cell = format_mean_std(acc["mean"], acc["std"], n, signed=True)
                inv_cell = format_mean_std(inv["mean"], inv["std"], n, signed=True)
                lines.append(
                    f"| {b} | {NAMES[m]} | {acc_cell} ({acc['better']}/{n}) "
                    f"| {inv_cell} ({n - inv['better']}/{n}) | {n} |"
                )
        lines.append("")
    fams = [(b, family(b)) for b in backbones if family(b)]
    if fams:
        lines.append("### The paper's Table 2 for the same families (224x224, 50,000 test images)\n")
        lines += [
            "| Method | " + " | ".join(f"{f} Acc | {f} InvE" for _, f in fams) + " |",
            "|---|" + "---:|---:|" * len(fams),
        ]
        for row, m in PAPER_ROWS.items():
            cells = []
            for _, f in fams:
                acc, inv = PAPER_TABLE2[f][m]  # type: ignore[index]
                cells += [f"{acc:.2f}", f"{inv:.2f}"]
            lines.append(f"| {NAMES[row]} | " + " | ".join(cells) + " |")
        lines.append(
            "\nThe paper's Table 3 (Swin): "
            + "; ".join(
                f"{NAMES[row]} {' / '.join(f'{a:.2f}' for a in PAPER_TABLE3[m])}"
                for row, m in PAPER_ROWS.items()
            )
            + "\n"
        )
    return "\n".join(lines) + "\n"


def aggregate(
    results: list[dict[str, Any]], results_dir: str | Path, *, plots: bool = True
) -> dict[str, Any]:
    """Write ``tables.md``, ``tables.json`` and the plots to ``results_dir``; return the summary."""
    if not results:
        raise ValueError("no evaluated runs to aggregate")
    for key in ("curve_scales", "bucket_edges"):
        if len({tuple(r[key]) for r in results}) > 1:
            raise ValueError(
                f"the runs were evaluated with different {key}; re-evaluate them with the same settings"
            )
    out = Path(results_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarise(results)
    files = write_report(out, "tables", markdown_tables(summary), summary)
    if plots:
        from .plots import plot_curves

        grouped = _group(results)
        for backbone, per in grouped.items():
            methods = [m for m in ROWS if m in per]
            first = per[methods[0]][0]
            if first["curve_scales"]:
                files.append(
                    str(
                        plot_curves(
                            {NAMES[m]: [r["curve_acc"] for r in per[m]] for m in methods},
                            first["curve_scales"],
                            out / f"per_scale_accuracy_{backbone}.png",
                            title=f"{backbone}: all three digits at one scale",
                            xlabel="digit scale factor",
                        )
                    )
                )
            edges = first["bucket_edges"]
            files.append(
                str(
                    plot_curves(
                        {NAMES[m]: [r["bucket_acc"] for r in per[m]] for m in methods},
                        [f"[{edges[i]:g}, {edges[i + 1]:g}]" for i in range(len(edges) - 1)],
                        out / f"bucket_accuracy_{backbone}.png",
                        title=f"{backbone}: Table 3 buckets",
                        xlabel="digit scale bucket",
                    )
                )
            )
            for m in methods:
                warps = Path(per[m][0]["run"]) / "canonical_warps.png"
                if warps.is_file():
                    target = out / f"canonical_warps_{backbone}_{m}.png"
                    shutil.copyfile(warps, target)
                    files.append(str(target))
    summary["files"] = files
    return summary
