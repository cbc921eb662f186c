"""Table 1 from the ``eval.json`` of several runs, as Markdown and JSON, plus the prediction figure.

- Table 1: one row per method, columns per backbone: mIoU (%) and EquE (eq. 23; the paper variant, squared
  L2, and the authors' root-mean variant), mean +- sample std over seeds.
- Robustness: mIoU on warped images, mIoU over the distance variants of each scene and the share of objects
  whose majority label is the same in every variant.
- Exact versus approximate inverse: for runs with canonicalizers, mIoU and EquE of the same weights with
  monowarp's exact inverse and with the paper's per-row/per-column approximation, and the size of the
  learned warps (mean |log slope|; 0 is a canonicalizer stuck at the identity).
- The paper's Table 1 for the families present.
- Figure: images, ground truth and the predictions of each method (`lse_segmentation.plots`).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from lse_common.reports import format_mean_std, group_results, mean_std, paired_differences, write_report

from .options import METHODS

__all__ = ["PAPER_TABLE1", "aggregate", "family", "markdown_tables", "summarise"]

NAMES = {"aug": "Aug", "canon": "Canon", "augl": "AugL", "dec": "DEC (ours)"}

PAPER_TABLE1 = {  # mIoU (%), EquE, from the paper's Table 1
    "ViT": {"aug": (82.18, 0.054), "augl": (82.35, 0.054), "dec": (83.12, 0.052)},
    "Swin": {"aug": (86.65, 0.036), "dec": (88.56, 0.035)},
    "DINOv2": {"aug": (76.63, 0.061), "dec": (80.86, 0.055)},
}

METRICS = ("miou", "equ_paper", "equ_reference", "miou_warped", "variant_miou", "variant_consistency")


def family(backbone: str) -> str | None:
    """The paper's family of a timm name (``None`` for others)."""
    name = backbone.lower()
    for key, fam in (("dinov2", "DINOv2"), ("swin", "Swin"), ("vit", "ViT")):
        if key in name:
            return fam
    return None


def _cell(runs: list[dict[str, Any]], key: str, scale: float, digits: int) -> str:
    values = [r[key] for r in runs if key in r]
    if not values:
        return ""
    mean, std = mean_std(values, scale=scale)
    return format_mean_std(mean, std, len(values), digits)


def summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The numbers behind the tables, as a JSON-friendly dict."""
    table: dict[str, Any] = defaultdict(dict)
    inverse: dict[str, Any] = defaultdict(dict)
    for (backbone, method), runs in group_results(results).items():
        entry: dict[str, Any] = {"seeds": sorted(r["seed"] for r in runs), "n": len(runs)}
        for key in (*METRICS, "warp_log_scale_mean"):
            values = [r[key] for r in runs if key in r]
            if values:
                mean, std = mean_std(values)
                entry[key] = {"mean": mean, "std": std}
        table[backbone][method] = entry
        if all(len(r.get("by_inverse", {})) > 1 for r in runs):
            inverse[backbone][method] = {
                inv: {
                    key: dict(
                        zip(("mean", "std"), mean_std([r["by_inverse"][inv][key] for r in runs]), strict=True)
                    )
                    for key in ("miou", "equ_paper", "equ_reference", "variant_consistency")
                    if all(key in r["by_inverse"][inv] for r in runs)
                }
                for inv in runs[0]["by_inverse"]
            }
    paired = {}
    for key in ("miou", "equ_paper"):
        for (backbone, method), d in paired_differences(results, key, reference="aug").items():
            paired.setdefault(backbone, {}).setdefault(method, {})[key] = d
    return {
        "table1": dict(table),
        "inverse": dict(inverse),
        "paired": paired,
        "runs": results,
        "notes": {
            "miou": "fraction (the tables show %)",
            "equ_paper": "eq. 23, squared L2 of softmax outputs, mean over valid pixels",
            "equ_reference": "root mean over valid pixels (the authors' code)",
            "std over seeds": "sample (n - 1)",
        },
    }


def markdown_tables(summary: dict[str, Any]) -> str:
    """Table 1 (ours), robustness, exact vs approximate inverse, and the paper's rows, in Markdown."""
    table = summary["table1"]
    backbones = list(table)
    methods = [m for m in METHODS if any(m in table[b] for b in backbones)]
    lines = ["### Table 1: mIoU (%) and EquE (eq. 23)\n"]
    head = " | ".join(f"{b} mIoU ↑ | {b} EquE ↓ | {b} EquE (ref.) ↓" for b in backbones)
    lines += [f"| Method | {head} |", "|---|" + "---:|---:|---:|" * len(backbones)]
    runs = defaultdict(list)
    for r in summary["runs"]:
        runs[(r["backbone"], r["method"])].append(r)
    for m in methods:
        cells = []
        for b in backbones:
            rs = runs.get((b, m), [])
            cells += [
                _cell(rs, "miou", 100, 2),
                _cell(rs, "equ_paper", 1, 4),
                _cell(rs, "equ_reference", 1, 4),
            ]
        lines.append(f"| {NAMES[m]} | " + " | ".join(cells) + " |")
    seeds = {b: max(e["n"] for e in table[b].values()) for b in backbones}
    lines.append("\nSeeds per cell: " + ", ".join(f"{b}: {n}" for b, n in seeds.items()) + "\n")
    lines.append("### Robustness: warped images and distance variants\n")
    lines += [
        "| Backbone | Method | mIoU warped (%) | mIoU variants (%) | consistent objects (%) | warp size |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for b in backbones:
        for m in methods:
            rs = runs.get((b, m), [])
            if rs:
                cells = [
                    _cell(rs, "miou_warped", 100, 2),
                    _cell(rs, "variant_miou", 100, 2),
                    _cell(rs, "variant_consistency", 100, 1),
                    _cell(rs, "warp_log_scale_mean", 1, 3),
                ]
                lines.append(f"| {b} | {NAMES[m]} | " + " | ".join(cells) + " |")
    lines.append(
        "\nwarp size: mean |log slope| of the canonicalizers' warps on the test images (0: the identity).\n"
    )
    if summary["inverse"]:
        lines.append("### The same weights with the exact inverse and with the paper's approximation\n")
        lines += [
            "| Backbone | Method | inverse | mIoU (%) | EquE ↓ | EquE (ref.) ↓ |",
            "|---|---|---|---:|---:|---:|",
        ]
        for b, per in summary["inverse"].items():
            for m, by in per.items():
                for inv, e in by.items():
                    miou, equ, ref = e["miou"]["mean"], e["equ_paper"]["mean"], e["equ_reference"]["mean"]
                    lines.append(f"| {b} | {NAMES[m]} | {inv} | {100 * miou:.2f} | {equ:.4f} | {ref:.4f} |")
        lines.append("")
    if summary["paired"]:
        lines.append("### Paired differences against Aug (same backbone and seed)\n")
        lines += ["| Backbone | Method | Δ mIoU (points) | Δ EquE | n |", "|---|---|---:|---:|---:|"]
        for b, per in summary["paired"].items():
            for m in methods:
                d = per.get(m)
                if d is None:
                    continue
                mi, eq = d["miou"], d["equ_paper"]
                n = mi["n"]
                mi_cell = format_mean_std(100 * mi["mean"], 100 * mi["std"], n, signed=True)
                eq_cell = format_mean_std(eq["mean"], eq["std"], n, 4, signed=True)
                lines.append(f"| {b} | {NAMES[m]} | {mi_cell} | {eq_cell} | {n} |")
        lines.append("")
    fams = [f for f in dict.fromkeys(family(b) for b in backbones) if f]
    if fams:
        lines.append("### The paper's Table 1 for the same families\n")
        lines += ["| Family | Method | mIoU | EquE |", "|---|---|---:|---:|"]
        for f in fams:
            for m, (miou, equ) in PAPER_TABLE1[f].items():
                lines.append(f"| {f} | {'Ours' if m == 'dec' else NAMES[m]} | {miou:.2f} | {equ:.3f} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def aggregate(
    results: list[dict[str, Any]],
    results_dir: str | Path,
    *,
    figure: bool = True,
    num_classes: int | None = None,
) -> dict[str, Any]:
    """Write ``table1.md``, ``table1.json`` and the prediction figures to ``results_dir``; return the
    summary."""
    if not results:
        raise ValueError("no evaluated runs to aggregate")
    out = Path(results_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarise(results)
    files = write_report(out, "table1", markdown_tables(summary), summary)
    if figure:
        from .plots import plot_predictions

        for backbone in summary["table1"]:
            runs = {
                r["method"]: Path(r["run"]) / "predictions.npz"
                for r in results
                if r["backbone"] == backbone and (Path(r["run"]) / "predictions.npz").is_file()
            }
            if runs:
                ordered = {NAMES[m]: runs[m] for m in METHODS if m in runs}
                files.append(
                    str(plot_predictions(ordered, out / f"predictions_{backbone}.png", title=backbone))
                )
    summary["files"] = files
    return summary
