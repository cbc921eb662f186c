"""Report tables over runs: mean +- std over seeds, paired differences, Markdown and JSON files.

A *result* is the dict an app's ``evaluate`` stores for one run (at least ``backbone``, ``method``, ``seed``
and the metrics). `group_results` groups results by backbone and method; `mean_std` and `format_mean_std`
make the usual "mean +- sample std over seeds" cells; `paired_differences` compares each method with a
reference method on the same backbone and seed (the comparison that removes the seed-to-seed spread a
between-method comparison suffers from); `markdown_table` and `write_report` write the files.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .checkpoint import atomic_write_bytes

__all__ = [
    "format_mean_std",
    "group_results",
    "markdown_table",
    "mean_std",
    "paired_differences",
    "write_report",
]


def mean_std(values: Iterable[float], scale: float = 1.0) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1; 0 for a single value) of ``values * scale``.

    Example:
        >>> mean_std([0.5, 0.7], scale=100)
        (60.0, 14.142135623730951)
    """
    v = np.asarray(list(values), dtype=np.float64) * scale
    if v.size == 0:
        raise ValueError("mean_std needs at least one value")
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def format_mean_std(mean: float, std: float, n: int, digits: int = 2, *, signed: bool = False) -> str:
    """``"mean ± std"`` for ``n > 1`` values, ``"mean"`` for one; ``signed`` writes the mean with its sign
    (for differences).

    Example:
        >>> format_mean_std(1.5, 0.25, 3, signed=True), format_mean_std(1.5, 0.0, 1)
        ('+1.50 ± 0.25', '1.50')
    """
    head = f"{mean:+.{digits}f}" if signed else f"{mean:.{digits}f}"
    return f"{head} ± {std:.{digits}f}" if n > 1 else head


def group_results(
    results: Iterable[Mapping[str, Any]], keys: Sequence[str] = ("backbone", "method")
) -> dict[tuple[Any, ...], list[Mapping[str, Any]]]:
    """Results grouped by the values of ``keys``, in order of first appearance."""
    grouped: dict[tuple[Any, ...], list[Mapping[str, Any]]] = defaultdict(list)
    for r in results:
        missing = [k for k in keys if k not in r]
        if missing:
            raise ValueError(f"result of run {r.get('run', '?')} has no {missing}")
        grouped[tuple(r[k] for k in keys)].append(r)
    return dict(grouped)


def paired_differences(
    results: Iterable[Mapping[str, Any]],
    metric: str,
    *,
    reference: str,
    scale: float = 1.0,
    pair_by: Sequence[str] = ("backbone", "seed"),
) -> dict[tuple[str, str], dict[str, Any]]:
    """``metric(method) - metric(reference)`` on runs paired by ``pair_by`` (same backbone and seed).

    Args:
        results: evaluated runs (dicts with ``backbone``, ``method``, ``seed`` and ``metric``).
        metric: the key to compare.
        reference: the method every other is compared with (e.g. ``"aug"`` or ``"invl"``).
        scale: multiply the differences (100 for percentage points).
        pair_by: the keys that make two runs a pair.

    Returns:
        ``{(backbone, method): {"diffs": [...], "seeds": [...], "mean", "std", "n", "better": k}}`` for
        every method with at least one pair; ``better`` counts the pairs with a positive difference.
    """
    runs = list(results)
    ref = {tuple(r[k] for k in pair_by): r for r in runs if r["method"] == reference}
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for (backbone, method), group in group_results(runs).items():
        if method == reference:
            continue
        diffs, seeds = [], []
        for r in sorted(group, key=lambda r: r.get("seed", 0)):
            partner = ref.get(tuple(r[k] for k in pair_by))
            if partner is None:
                continue
            diffs.append((float(r[metric]) - float(partner[metric])) * scale)
            seeds.append(r.get("seed"))
        if diffs:
            mean, std = mean_std(diffs)
            out[(backbone, method)] = {
                "diffs": diffs,
                "seeds": seeds,
                "mean": mean,
                "std": std,
                "n": len(diffs),
                "better": sum(d > 0 for d in diffs),
            }
    return out


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]], *, align: str | None = None) -> str:
    """A Markdown table; ``align`` is one character per column (``l`` or ``r``; default: first left)."""
    header = [str(h) for h in header]
    align = align or "l" + "r" * (len(header) - 1)
    if len(align) != len(header):
        raise ValueError(f"align needs one character per column ({len(header)}), got {align!r}")
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|",
    ]
    for row in rows:
        cells = [str(c) for c in row]
        if len(cells) != len(header):
            raise ValueError(f"row {cells} has {len(cells)} cells, the header {len(header)}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_report(folder: str | os.PathLike, stem: str, markdown: str, data: Any) -> list[str]:
    """Write ``<stem>.md`` and ``<stem>.json`` into ``folder`` (atomically); returns the two paths."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    md = atomic_write_bytes(out / f"{stem}.md", markdown.encode())
    js = atomic_write_bytes(out / f"{stem}.json", json.dumps(data, indent=1, default=_plain).encode())
    return [str(md), str(js)]


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
