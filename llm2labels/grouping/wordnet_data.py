"""WordNet 3.0 nouns, read offline through NLTK's WordNet reader.

Where the data comes from, first found wins:
1. `$WORDNET_DIR`: a directory holding WordNet's database files (`data.noun`, `index.noun`, `noun.exc`,
   `lexnames`, ...), or a `corpora/wordnet` folder or `wordnet.zip` below it;
2. NLTK's data path (`nltk.download("wordnet")`, `$NLTK_DATA`);
3. the copy inside this package (`assets/wordnet/wordnet.zip`: WordNet 3.0's noun files, ~6 MB, under
   Princeton's WordNet license; see SOURCES.md there).
Nothing else is downloaded. Loading costs ~0.7 s (the noun index; synsets are read on demand) plus ~1 s to
import NLTK, paid once per process and only by the groupers that use WordNet.
"""

from __future__ import annotations

import functools
import os
import warnings
from importlib import resources
from pathlib import Path
from typing import Any

from llm2labels.errors import ConfigError

PACKAGED = "llm2labels/assets/wordnet/wordnet.zip"
HOW_TO_GET = ("reinstall llm2labels (its wheel carries WordNet 3.0's nouns), run "
              "`python -m nltk.downloader wordnet`, or set WORDNET_DIR to a folder with WordNet's data.noun, "
              "index.noun, noun.exc and lexnames")


def _packaged_zip() -> Path:
    return Path(str(resources.files("llm2labels") / "assets" / "wordnet" / "wordnet.zip"))


def _reader_class() -> type:
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    class NounReader(WordNetCorpusReader):
        """NLTK's reader without the cross-version synset map it builds for multilingual (OMW) lookups,
        which we do not use: that map re-reads index.sense twice (~2 s) and needs NLTK's own copy."""

        def map_wn(self, version: str = "wordnet") -> None:
            return None

    return NounReader


def _allow(root: Path) -> None:
    """NLTK opens corpus files only below its data path (its path-security check): add `root` to it."""
    import nltk

    text = str(root)
    if text not in nltk.data.path:
        nltk.data.path.append(text)


def _pointer_in(folder: Path) -> Any | None:
    """An NLTK path pointer to the WordNet files in `folder`, in any of the layouts it may hold."""
    from nltk.data import FileSystemPathPointer, ZipFilePathPointer

    for candidate in (folder, folder / "corpora" / "wordnet", folder / "wordnet"):
        if (candidate / "data.noun").is_file():
            _allow(candidate)
            return FileSystemPathPointer(str(candidate))
    for archive in (folder / "wordnet.zip", folder / "corpora" / "wordnet.zip"):
        if archive.is_file():
            _allow(archive.parent)
            return ZipFilePathPointer(str(archive), "wordnet/")
    return None


def _nltk_path_pointer() -> Any | None:
    import nltk

    try:
        return nltk.data.find("corpora/wordnet")
    except LookupError:
        return None


def locate() -> tuple[Any, str]:
    """(NLTK path pointer, where it is) for the first WordNet found; ConfigError saying how to get one."""
    env = os.environ.get("WORDNET_DIR")
    if env:
        pointer = _pointer_in(Path(env).expanduser())
        if pointer is None:
            raise ConfigError(f"WORDNET_DIR={env} holds no WordNet data.noun: {HOW_TO_GET}")
        return pointer, f"WORDNET_DIR={env}"
    pointer = _nltk_path_pointer()
    if pointer is not None:
        return pointer, f"NLTK data ({pointer.path})"
    packaged = _packaged_zip()
    if packaged.is_file():
        pointer = _pointer_in(packaged.parent)
        if pointer is not None:
            return pointer, f"packaged ({packaged})"
    raise ConfigError(f"WordNet not found (no WORDNET_DIR, nothing on NLTK's data path, no {PACKAGED}): "
                      f"{HOW_TO_GET}")


@functools.lru_cache(maxsize=1)
def load_wordnet() -> Any:
    """NLTK's WordNet reader over the first WordNet found (once per process); `.source` says which."""
    try:
        import nltk  # noqa: F401
    except ImportError as e:
        raise ConfigError(f"the WordNet groupers need nltk (pip install -e .): {e}") from e
    pointer, where = locate()
    try:
        with warnings.catch_warnings():  # "multilingual functions are not available": no OMW, on purpose
            warnings.simplefilter("ignore")
            reader = _reader_class()(pointer, None)
    except (OSError, ValueError, LookupError, AssertionError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(f"cannot read WordNet from {where} ({first}): {HOW_TO_GET}") from e
    reader.source = where
    return reader
