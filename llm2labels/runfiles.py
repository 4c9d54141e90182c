"""A run's files, written and read back by every part that touches them (the app, `group`, `evaluate`, the
report, the W&B tracker, the tables).

Written by a run: labels.csv (the ranked list), summary.json and the other JSON files (atomically, through
`textio`), images.jsonl (by `score_run`, a line per image). Read back here: labels.csv (or any CSV with a
`label` column, or one label per line), images.jsonl, pr_curve.csv, vocabulary.csv and the JSON files.
One reader for every command that takes a ranked list (`group`, `evaluate`), so a file is accepted or
refused the same way everywhere. CSVs are parsed by the standard library in strict mode (an unterminated
quote is an error, not a label that swallows the rest of the file) with no field-size limit; every value
is text ("none", "nan" and "null" are labels). Every problem is one ConfigError line naming the file.
Standard library only: `evaluate` stays a light command.
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llm2labels.errors import ConfigError
from llm2labels.textio import json_text, write_atomic

if TYPE_CHECKING:
    import pandas as pd

    from llm2labels.scoring.rank import RankedLabel

LABELS_CSV_COLUMNS = ("rank", "label", "score", "occ", "prob", "images")


def write_json(path: Path, obj: Any) -> None:
    """Write atomically (temp file + rename), so a killed run never leaves half a JSON file."""
    write_atomic(path, json_text(obj, indent=1, default=str) + "\n")


def write_labels_csv(path: Path, ranked: list[RankedLabel]) -> None:
    """rank, label, score, occ, prob, images, surface_forms ("|"-joined, most frequent first)."""
    from llm2labels.scoring.rank import to_frame

    write_atomic(path, to_frame(ranked).to_csv(index=False))


def read_json(path: Path) -> Any:
    """The parsed file, or None when it is missing (a partial run still gets a report)."""
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def read_text(path: Path) -> str | None:
    """A text file of the run (its Hydra config), undecodable bytes replaced; None when missing."""
    return path.read_text(encoding="utf-8", errors="replace") if path.is_file() else None


def image_records(path: Path) -> Iterator[dict[str, Any]]:
    """images.jsonl, one dict per scored image (blank lines skipped); nothing when the file is missing."""
    if not path.is_file():
        return
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


def read_label_rows(path: Path) -> list[dict[str, str]]:
    """labels.csv rows as text, in rank order (the file's); [] when the file is missing."""
    return read_csv(path, ("label",)) if path.is_file() else []


def read_frame(path: Path) -> pd.DataFrame | None:
    """A run's table (pr_curve.csv, vocabulary.csv) for pandas users, or None when it is missing;
    "none", "nan" and "null" stay text."""
    import pandas as pd

    return pd.read_csv(path, keep_default_na=False) if path.is_file() else None


def read_csv(path: Path, required: tuple[str, ...]) -> list[dict[str, str]]:
    """The rows of a CSV as strings, in file order; ConfigError if unreadable or missing a `required` column."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read {path}: {e}") from e
    csv.field_size_limit(sys.maxsize)  # a 50 MB label is odd, not an error
    reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
    try:
        rows = list(reader)
    except csv.Error as e:
        raise ConfigError(f"cannot read {path} line {reader.line_num}: {e} (a quote left open?)") from e
    missing = [c for c in required if c not in (reader.fieldnames or [])]
    if missing:
        raise ConfigError(f"{path} lacks column(s) {', '.join(missing)}: expected a run's labels.csv "
                          f"({', '.join(LABELS_CSV_COLUMNS)}), or give a .txt file with one label per line")
    return [{k: v if v is not None else "" for k, v in row.items() if k is not None} for row in rows]


def read_lines(path: Path) -> list[str]:
    """Non-blank lines, stripped, in order."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read {path}: {e}") from e
    return [line.strip() for line in text.splitlines() if line.strip()]


def _number(row: dict[str, str], key: str, whole: bool = False) -> float:
    value = float(row[key])  # ValueError for text
    if not math.isfinite(value) or (whole and value != int(value)):
        raise ValueError(f"{key}={row[key]!r}")
    return value


def read_ranked_labels(path: str | Path) -> list[RankedLabel]:
    """The ranked list of a labels.csv (rows in rank order) or of a text file (rank = line order,
    score = 1/rank, occ = prob = images = 0). Blank labels are skipped; a label given twice keeps its first
    (best) row, and ranks are renumbered 1..n."""
    from llm2labels.scoring.rank import RankedLabel

    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"labels file {path} not found: give a run's labels.csv or a text file, one label a line")
    if path.suffix.lower() != ".csv":
        labels = dict.fromkeys(read_lines(path))
        return [RankedLabel(i, label, 1.0 / i, 0.0, 0.0, 0, []) for i, label in enumerate(labels, start=1)]
    rows = []
    for number, row in enumerate(read_csv(path, LABELS_CSV_COLUMNS), start=2):
        try:
            rows.append(RankedLabel(
                int(_number(row, "rank", whole=True)), row["label"].strip(), _number(row, "score"),
                _number(row, "occ"), _number(row, "prob"), int(_number(row, "images", whole=True)),
                [f for f in row.get("surface_forms", "").split("|") if f]))
        except (ValueError, OverflowError) as e:
            raise ConfigError(f"{path} line {number}: rank, score, occ, prob and images must be finite numbers "
                              f"(rank and images whole), got {e}") from e
    rows.sort(key=lambda r: r.rank)  # stable: equal ranks keep file order
    firsts: dict[str, RankedLabel] = {}
    for row in rows:
        if row.label:
            firsts.setdefault(row.label, row)
    for rank, row in enumerate(firsts.values(), start=1):
        row.rank = rank
    return list(firsts.values())


def read_label_column(path: str | Path) -> list[str]:
    """The `label` column of any CSV, in file order, blanks skipped (what `evaluate` ranks)."""
    return [row["label"] for row in read_csv(Path(path).expanduser(), ("label",)) if row["label"].strip()]
