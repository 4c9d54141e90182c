"""The files a run leaves in its output directory: labels.csv, vocabulary.json, images.jsonl, summary.json."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from llm2labels.scoring.rank import RankedLabel, to_frame


def write_json(path: Path, obj: Any) -> None:
    """Write atomically (temp file + rename), so a killed run never leaves half a JSON file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def write_labels_csv(path: Path, ranked: list[RankedLabel]) -> None:
    """rank, label, score, occ, prob, images, surface_forms ("|"-joined, most frequent first)."""
    tmp = path.with_name(path.name + ".tmp")
    to_frame(ranked).to_csv(tmp, index=False)
    os.replace(tmp, path)
