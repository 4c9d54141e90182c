"""The files a run leaves in its output directory: labels.csv, vocabulary.json, images.jsonl, summary.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llm2labels.scoring.rank import RankedLabel, to_frame
from llm2labels.textio import json_text, write_atomic


def write_json(path: Path, obj: Any) -> None:
    """Write atomically (temp file + rename), so a killed run never leaves half a JSON file."""
    write_atomic(path, json_text(obj, indent=1, default=str) + "\n")


def write_labels_csv(path: Path, ranked: list[RankedLabel]) -> None:
    """rank, label, score, occ, prob, images, surface_forms ("|"-joined, most frequent first)."""
    write_atomic(path, to_frame(ranked).to_csv(index=False))
