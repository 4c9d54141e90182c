"""Vocabulary-level metrics of a ranked label list (paper Tables 1 and 2; docs/method.md, "Evaluation").

For the top K entries of the list and a set C of ground-truth classes (figures in percent):
- `P`       = entries matching >= 1 class of C / K: precision counts labels, so two synonyms of one class are
              two hits, and a label matching several classes of C is one hit;
- `P_class` = distinct classes of C matched / K, the class-counted precision. It is capped at P, so it is
              always the stricter figure: a label that is a synonym of several classes (A-847 has 77 such
              strings) finds each of them for recall, but earns one rank's worth of precision at most;
- `R`       = distinct classes of C matched / |C|.
A list shorter than K is padded with misses (the divisor stays K): `precision_divisor="k"`, the definition.
`precision_divisor="min_k_len"` divides P and P_class by min(K, #L) instead, so a short list is not padded: the
reading under which the paper's A-847 rows are possible (e.g. P 37.81 with #L 321 at K = 1000). The PR curve
is traced by K = 1..min(max_k, len(list)); `AUC` is the trapezoid area under precision (P, not P_class) over
recall, with the curve prefixed by the point (recall 0, precision at K=1).

Entries are compared by their normalised text (a synset by the set of its members' normalised texts). By
default an entry repeating an earlier one ("Chairs" after "chair") or normalising to nothing is dropped before
ranks are counted, so a tagger cannot earn precision by repeating a label; `#L` counts the entries that remain,
and `#L at K` caps it at the curve's last K (max_k), as the paper reports it ("#L at K = 5k").
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from llm2labels.errors import ConfigError
from llm2labels.evaluation.matching import ClassMatcher
from llm2labels.normalize import normalize_label

Entry = str | Sequence[str]
# Default K per packaged list (docs/method.md); any other list defaults to its number of classes.
DEFAULT_K = {"ade20k_150": 150, "ade20k_847": 1000}
# What P@K and P_class@K divide by: K (padding a short list with misses), or min(K, #L).
PRECISION_DIVISORS = ("k", "min_k_len")


@dataclass
class VocabResult:
    """Scalars in percent at K; curve arrays (fractions 0-1) for K = 1..len(ks)."""

    num_classes: int
    k: int
    P: float
    P_class: float
    R: float
    AUC: float
    ks: np.ndarray = field(default_factory=lambda: np.zeros(0, int), repr=False, compare=False)
    precision: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False, compare=False)
    recall: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False, compare=False)

    def to_dict(self, curves: bool = False) -> dict[str, Any]:
        """The scalar fields; with `curves`, also ks/precision/recall as lists."""
        out = {k: v for k, v in asdict(self).items() if k not in ("ks", "precision", "recall")}
        if curves:
            out.update(ks=self.ks.tolist(), precision=self.precision.tolist(), recall=self.recall.tolist())
        return out


def normalise_entry(entry: Entry) -> str | tuple[str, ...]:
    """A label's normalised text, or a synset's sorted distinct normalised members ('' / () when empty)."""
    if isinstance(entry, str):
        return normalize_label(entry)
    return tuple(sorted({normalize_label(m) for m in entry} - {""}))


def distinct_entries(entries: Sequence[Entry], limit: int | None = None) -> list[str | tuple[str, ...]]:
    """Normalised entries in rank order, first occurrence of each kept, empty ones dropped (at most `limit`)."""
    seen: set[str | tuple[str, ...]] = set()
    out: list[str | tuple[str, ...]] = []
    for entry in entries:
        if limit is not None and len(out) >= limit:
            break
        key = normalise_entry(entry)
        if key and key not in seen:
            seen.add(key)
            out.append(key)
    return out


def _check_int(name: str, value: Any) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def _check_divisor(value: Any) -> str:
    if value not in PRECISION_DIVISORS:
        raise ConfigError(f"precision_divisor must be one of {', '.join(PRECISION_DIVISORS)}, got {value!r}")
    return str(value)


def _class_ids(matcher: ClassMatcher, classes: Collection[int] | None) -> np.ndarray:
    if classes is None:
        return np.array(sorted(matcher.ids), dtype=np.int64)
    ids = set(classes)
    unknown = sorted(ids - matcher.ids, key=str)
    if unknown:
        raise ConfigError(f"class ids {unknown[:10]} are not in the class list (valid ids: "
                          f"{min(matcher.ids)}..{max(matcher.ids)})")
    if not ids:
        raise ConfigError("the set of evaluated classes is empty: give at least one class id")
    return np.array(sorted(ids), dtype=np.int64)


def _cumulative(matches: list[tuple[int, ...]], class_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative label hits and distinct classes of `class_ids` found, per rank (length len(matches))."""
    n = len(matches)
    lengths = np.fromiter((len(m) for m in matches), dtype=np.int64, count=n)
    flat = np.fromiter(itertools.chain.from_iterable(matches), dtype=np.int64, count=int(lengths.sum()))
    ranks = np.repeat(np.arange(n), lengths)  # non-decreasing
    keep = np.isin(flat, class_ids)
    flat, ranks = flat[keep], ranks[keep]
    hit = np.zeros(n, dtype=np.int64)
    hit[ranks] = 1
    _, first = np.unique(flat, return_index=True)  # first occurrence = the rank where a class is first found
    new = np.bincount(ranks[first], minlength=n)
    return np.cumsum(hit), np.cumsum(new)


def _at(cum: np.ndarray, k: int) -> int:
    """Value of a cumulative count at K, the ranks past the list's end being misses."""
    return int(cum[min(k, len(cum)) - 1]) if len(cum) else 0


def _metrics(matches: list[tuple[int, ...]], class_ids: np.ndarray, k: int, max_k: int,
             precision_divisor: str = "k") -> VocabResult:
    """Scalars at K and the curve; `matches` holds the list's first max(K, max_k) entries, so min(K, #L) is
    min(K, len(matches))."""
    n_classes = len(class_ids)
    hits, found = _cumulative(matches, class_ids)
    m = min(max_k, len(matches))
    ks = np.arange(1, m + 1)
    precision, recall = hits[:m] / ks, found[:m] / n_classes
    auc = 0.0
    if m:
        r = np.concatenate(([0.0], recall))
        p = np.concatenate(([precision[0]], precision))
        auc = float(np.sum(np.diff(r) * (p[1:] + p[:-1]) / 2))
    divisor = k if precision_divisor == "k" else min(k, len(matches))
    hits_k, classes_k = _at(hits, k), min(_at(found, k), _at(hits, k))
    return VocabResult(num_classes=n_classes, k=k, P=100 * hits_k / divisor if divisor else 0.0,
                       P_class=100 * classes_k / divisor if divisor else 0.0, R=100 * _at(found, k) / n_classes,
                       AUC=100 * auc, ks=ks, precision=precision, recall=recall)


def vocabulary_metrics(entries: Sequence[Entry], matcher: ClassMatcher, k: int,
                       classes: Collection[int] | None = None, max_k: int = 5000,
                       dedupe: bool = True, precision_divisor: str = "k") -> VocabResult:
    """P@K, P_class@K, R@K and AUC(PR@K) of a ranked list against the classes C (None: the whole list).

    `dedupe=False` walks the entries exactly as given (repeats count again, empty entries are misses).
    `precision_divisor`: "k" or "min_k_len" (see the module docstring).
    """
    k, max_k = _check_int("k", k), _check_int("max_k", max_k)
    precision_divisor = _check_divisor(precision_divisor)
    class_ids = _class_ids(matcher, classes)
    limit = max(k, max_k)
    keys = distinct_entries(entries, limit) if dedupe else [normalise_entry(e) for e in entries[:limit]]
    return _metrics([matcher.match_entry(e) for e in keys], class_ids, k, max_k, precision_divisor)


def default_k(classes: str, matcher: ClassMatcher) -> int:
    """150 for ade20k_150, 1000 for ade20k_847 (the paper's settings), else the list's number of classes."""
    return DEFAULT_K.get(str(classes), len(matcher))


_REPORTED = ("num_classes", "P", "P_class", "R", "AUC")


def evaluate_ranked(entries: Sequence[Entry], classes: str, k: int | None = None,
                    seen: Collection[int] | None = None, max_k: int = 5000,
                    precision_divisor: str = "k") -> dict[str, Any]:
    """The CLI's report: K, #L, FP in vocab, and the metrics for the seen classes (if given) and the full list.

    `num_labels` (#L) counts the distinct entries, `num_labels_at_max_k` the same capped at `max_k` (the
    paper's "#L at K = 5k"); `fp_in_vocab` those among the top `max_k` that match no class of the full list;
    `precision_divisor` says what P and P_class divide by.
    """
    return evaluate_with_curves(entries, classes, k, seen, max_k, precision_divisor)[0]


def evaluate_with_curves(entries: Sequence[Entry], classes: str, k: int | None = None,
                         seen: Collection[int] | None = None, max_k: int = 5000, precision_divisor: str = "k"
                         ) -> tuple[dict[str, Any], dict[str, VocabResult]]:
    """`evaluate_ranked`'s report and the VocabResult (with curves) behind each of its "seen"/"full" parts."""
    matcher = ClassMatcher.from_name(classes)
    k = default_k(classes, matcher) if k is None else _check_int("k", k)
    max_k = _check_int("max_k", max_k)
    precision_divisor = _check_divisor(precision_divisor)
    keys = distinct_entries(entries)
    matches = [matcher.match_entry(e) for e in keys[: max(k, max_k)]]
    report: dict[str, Any] = {"classes": str(classes), "k": k, "max_k": max_k, "num_labels": len(keys),
                              "num_labels_at_max_k": min(len(keys), max_k),
                              "fp_in_vocab": sum(1 for m in matches[:max_k] if not m),
                              "precision_divisor": precision_divisor}
    results: dict[str, VocabResult] = {}
    if seen is not None:
        results["seen"] = _metrics(matches, _class_ids(matcher, seen), k, max_k, precision_divisor)
    results["full"] = _metrics(matches, _class_ids(matcher, None), k, max_k, precision_divisor)
    for name, result in results.items():
        report[name] = {key: getattr(result, key) for key in _REPORTED}
    return report, results


def read_ranked(path: str | Path) -> list[Entry]:
    """The entries of a ranked list file, in file order.

    - `.csv` (labels.csv of a run, or any CSV with a `label` column): that column, rows in file order;
    - `.json`: a vocabulary.json (each synset's `members` list is one entry) or a JSON list whose items are
      labels or lists of labels;
    - anything else: plain text, one label per line, blank lines skipped.
    """
    from llm2labels.runfiles import read_label_column, read_lines

    path = Path(path).expanduser()
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return list(read_label_column(path))
    if suffix == ".json":
        try:
            text = path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"cannot read ranked list {path}: {e}") from e
        return _json_entries(text, path)
    return list(read_lines(path))


def _json_entries(text: str, path: Path) -> list[Entry]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path} is not valid JSON: {e}") from e
    if isinstance(data, dict) and isinstance(data.get("synsets"), list):
        data = [s.get("members", [s.get("name")]) if isinstance(s, dict) else s for s in data["synsets"]]
    if not isinstance(data, list) or not all(
            isinstance(e, str) or (isinstance(e, list) and all(isinstance(m, str) for m in e)) for e in data):
        raise ConfigError(f"{path}: expected a vocabulary.json (with 'synsets') or a JSON list of labels "
                          "or lists of labels")
    return data
