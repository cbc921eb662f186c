"""A CSV metrics log that survives kills and resumes.

Rows are dictionaries; the header is the union of their keys in first-seen order. The whole file is
rewritten atomically on every `CSVLogger.log` (logs are small: one row every few steps), so a kill never
leaves a torn line, and `CSVLogger.truncate` drops the rows a killed run wrote after its last checkpoint.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any

from .checkpoint import atomic_write_bytes

__all__ = ["CSVLogger", "read_csv_log"]


def read_csv_log(path: str | os.PathLike) -> list[dict[str, str]]:
    """The rows of a CSV log as dictionaries of strings (``[]`` when the file does not exist)."""
    p = Path(path)
    if not p.is_file():
        return []
    with p.open(newline="") as fh:
        return list(csv.DictReader(fh))


class CSVLogger:
    """Append rows to a CSV file.

    Args:
        path: the CSV file; existing rows are kept (a resumed run continues the same log).
        enabled: write nothing when false (the non-main processes of a distributed run).

    Example:
        >>> import tempfile, pathlib
        >>> log = CSVLogger(pathlib.Path(tempfile.mkdtemp()) / "m.csv")
        >>> log.log({"step": 1, "loss": 0.5}); log.log({"step": 2, "acc": 1.0})
        >>> [r["acc"] for r in read_csv_log(log.path)]
        ['', '1.0']
    """

    def __init__(self, path: str | os.PathLike, *, enabled: bool = True) -> None:
        self.path = Path(path)
        self.enabled = enabled
        self._rows: list[dict[str, Any]] = [dict(r) for r in read_csv_log(self.path)] if enabled else []
        self._fields: list[str] = []
        for row in self._rows:
            self._add_fields(row)

    def _add_fields(self, row: dict[str, Any]) -> None:
        for k in row:
            if k not in self._fields:
                self._fields.append(k)

    @property
    def rows(self) -> list[dict[str, Any]]:
        return list(self._rows)

    def log(self, row: dict[str, Any]) -> None:
        """Add one row and rewrite the file."""
        if not self.enabled:
            return
        self._rows.append(dict(row))
        self._add_fields(row)
        self._flush()

    def truncate(self, step: int, key: str = "step") -> None:
        """Drop the rows whose ``key`` is greater than ``step`` (those written after a checkpoint)."""
        if not self.enabled:
            return
        self._rows = [r for r in self._rows if r.get(key) in (None, "") or int(float(r[key])) <= step]
        self._flush()

    def _flush(self) -> None:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self._fields, restval="", lineterminator="\n")
        writer.writeheader()
        writer.writerows(self._rows)
        atomic_write_bytes(self.path, buf.getvalue().encode())
