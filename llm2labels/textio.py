"""Text files a run writes: JSON that survives any file name, and atomic writes that clean up after a failure.

A file name that is not valid UTF-8 reaches Python with lone surrogates ("caf\\udce9.jpg"), which no UTF-8
file can hold. JSON is then written with ASCII escapes, which `json.loads` turns back into the same string
(and `os.fsencode` into the file's name); other text (HTML, XML, CSV) shows such characters as backslash
escapes.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

from llm2labels.errors import StorageError


def json_text(obj: Any, **kwargs: Any) -> str:
    """`json.dumps(obj, ensure_ascii=False, **kwargs)`, or with ASCII escapes when UTF-8 cannot hold it."""
    text = json.dumps(obj, ensure_ascii=False, **kwargs)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(obj, ensure_ascii=True, **kwargs)
    return text


def json_line(record: Any) -> str:
    """One compact JSON line (a store record, an images.jsonl line)."""
    return json_text(record, separators=(",", ":")) + "\n"


def write_atomic(path: str | Path, text: str) -> Path:
    """Write `text` (UTF-8) through a temp file renamed into place, so a killed process never leaves half a
    file. A disk that refuses (full, read-only) raises StorageError naming the file, and no temp file stays."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_bytes(text.encode("utf-8", "backslashreplace"))
        os.replace(tmp, path)
    except OSError as e:
        raise StorageError.writing(path, e) from e
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
    return path
