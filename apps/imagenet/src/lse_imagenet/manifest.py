"""The manifest of a locally scaled ImageNet folder: one record per written variant.

The output root of ``lse-imagenet data`` holds::

    manifest.jsonl            one JSON object per written variant (sorted by image, then factor)
    summary.json              counts: images seen, done, failed (by reason), variants written
    failures.jsonl            one JSON object per image that was skipped, with the reason
    images/<class>/<stem>_s<factor>.<ext>     the variants (s1.00 is the original image, unchanged)
    masks/<class>/<stem>.png                  the object mask of each image (0 or 255)

A record's fields (`VariantRecord`): ``image_id`` (stable, the source's relative path without its
extension), ``source`` (the original's path relative to the input folder), ``label`` (the class index in
the sorted order of the input's class folders, as torchvision's ``ImageFolder`` numbers them),
``class_name`` (the folder name, e.g. the WordNet id), ``factor`` (the object's scale factor, rounded to 2
decimals), ``path`` and ``mask_path`` (relative to the output root) and ``mask_quality`` (the fraction of
the object mask that lies inside the detected box, in ``[0, 1]``).

A shard of a run (``--data.shard K/N``) writes ``manifest-K-of-N.jsonl``, ``summary-K-of-N.json`` and
``failures-K-of-N.jsonl`` instead; `merge_manifests` joins the shards into the files above.

Lines are appended one image at a time while a run goes on, so a run killed mid-write may leave a
truncated last line: `read_manifest` ignores an unfinished last line (and only that one).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from lse_common.checkpoint import atomic_path

__all__ = [
    "FAILURES",
    "MANIFEST",
    "SUMMARY",
    "VariantRecord",
    "classes",
    "factor_key",
    "group_by_image",
    "read_jsonl",
    "read_manifest",
    "shard_suffix",
    "write_manifest",
]

MANIFEST = "manifest.jsonl"
"""The manifest's file name in the output root."""
SUMMARY = "summary.json"
"""The summary's file name in the output root."""
FAILURES = "failures.jsonl"
"""The file name of the skipped images (with reasons) in the output root."""


def factor_key(factor: float) -> float:
    """A scale factor as it is stored and used as a key: rounded to 2 decimals."""
    return round(float(factor), 2)


def shard_suffix(shard: tuple[int, int] | None) -> str:
    """The file-name suffix of shard ``(k, n)``: ``""`` for a whole run, else ``"-k-of-n"``."""
    if shard is None:
        return ""
    k, n = shard
    return f"-{k}-of-{n}"


@dataclass(frozen=True)
class VariantRecord:
    """One written variant of one source image (see the module docstring for the fields)."""

    image_id: str
    source: str
    label: int
    class_name: str
    factor: float
    path: str
    mask_path: str
    mask_quality: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "factor", factor_key(self.factor))
        object.__setattr__(self, "label", int(self.label))
        object.__setattr__(self, "mask_quality", float(self.mask_quality))
        if not 0.0 <= self.mask_quality <= 1.0:
            raise ValueError(f"mask_quality must lie in [0, 1], got {self.mask_quality}")
        if self.label < 0:
            raise ValueError(f"label must be >= 0, got {self.label}")
        if self.factor <= 0:
            raise ValueError(f"factor must be > 0, got {self.factor}")

    def to_json(self) -> str:
        """The record as one line of JSON (no newline)."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VariantRecord:
        """Build a record from a mapping of its fields (extra keys are an error).

        Raises:
            ValueError: for a missing or unknown key.
        """
        names = {f.name for f in fields(cls)}
        missing, unknown = names - set(data), set(data) - names
        if missing or unknown:
            raise ValueError(
                f"manifest record: missing keys {sorted(missing)}, unknown keys {sorted(unknown)}"
            )
        return cls(**data)


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The objects of a JSON-lines file; an unfinished last line (a killed writer) is left out.

    Raises:
        ValueError: if a line other than the last is not valid JSON (naming the file and line).
    """
    p = Path(path)
    if not p.is_file():
        return []
    text = p.read_text(encoding="utf-8")
    lines = text.split("\n")
    out = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as err:
            if i == len(lines) - 1:  # no newline after it: the write was cut short
                break
            raise ValueError(f"{p}, line {i + 1}: not valid JSON ({err})") from err
    return out


def _manifest_path(root: str | os.PathLike) -> Path:
    p = Path(root)
    return p if p.suffix == ".jsonl" else p / MANIFEST


def read_manifest(root: str | os.PathLike) -> list[VariantRecord]:
    """The records of the manifest of output folder ``root`` (or of a ``.jsonl`` file given directly).

    Raises:
        FileNotFoundError: if there is no manifest.
        ValueError: for a damaged line or a record with missing or unknown fields.
    """
    path = _manifest_path(root)
    if not path.is_file():
        raise FileNotFoundError(f"no manifest at {path} (run `lse-imagenet data`, then merge shards)")
    return [VariantRecord.from_dict(d) for d in read_jsonl(path)]


def sort_records(records: Iterable[VariantRecord]) -> list[VariantRecord]:
    """Records in the manifest's order: by image, then by factor."""
    return sorted(records, key=lambda r: (r.image_id, r.factor))


def write_manifest(root: str | os.PathLike, records: Iterable[VariantRecord]) -> Path:
    """Write ``records`` (sorted by image and factor) as the manifest of ``root``, atomically.

    Args:
        root: the output folder, or the ``.jsonl`` file to write.
        records: the variants.

    Returns:
        The manifest's path.

    Raises:
        ValueError: if two records share an image and a factor.
    """
    recs = sort_records(records)
    seen: set[tuple[str, float]] = set()
    for r in recs:
        if (r.image_id, r.factor) in seen:
            raise ValueError(f"two manifest records for image {r.image_id!r} at factor {r.factor}")
        seen.add((r.image_id, r.factor))
    path = _manifest_path(root)
    with atomic_path(path) as tmp:
        tmp.write_text("".join(r.to_json() + "\n" for r in recs), encoding="utf-8")
    return path


def group_by_image(records: Iterable[VariantRecord]) -> dict[str, dict[float, VariantRecord]]:
    """Records grouped by source image: ``{image_id: {factor: record}}`` (factors rounded to 2 decimals).

    Raises:
        ValueError: if two records share an image and a factor.
    """
    out: dict[str, dict[float, VariantRecord]] = {}
    for r in records:
        per = out.setdefault(r.image_id, {})
        key = factor_key(r.factor)
        if key in per:
            raise ValueError(f"two manifest records for image {r.image_id!r} at factor {key}")
        per[key] = r
    return {k: dict(sorted(v.items())) for k, v in sorted(out.items())}


def classes(root: str | os.PathLike, records: Sequence[VariantRecord] | None = None) -> list[str]:
    """The class names of output folder ``root`` in label order.

    Read from ``summary.json`` (which lists every class folder of the input, also those without a written
    variant); without one, from the manifest's records (only the classes that have variants; a label
    with none is then named ``""``).

    Raises:
        FileNotFoundError: if ``root`` has neither a summary nor a manifest.
    """
    summary = Path(root) / SUMMARY
    if summary.is_file():
        names = json.loads(summary.read_text(encoding="utf-8")).get("classes")
        if names is not None:
            return list(names)
    recs = read_manifest(root) if records is None else records
    if not recs:
        return []
    names = [""] * (max(r.label for r in recs) + 1)
    for r in recs:
        names[r.label] = r.class_name
    return names


def write_json(path: str | os.PathLike, data: Mapping[str, Any]) -> Path:
    """Write ``data`` as indented JSON to ``path``, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return Path(path)
