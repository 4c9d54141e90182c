"""Score a grouper against the synonym partitions of every shipped class list.

    python -m experiments.grouping_benchmark [--grouper hybrid] [--lists lvis_1203 ...] [key=value ...]
                                             [--json out.json] [--timing]

Ground truth, per list: each class is one group of its synonyms after `normalize_label`; a string that
normalises into several classes of the list is dropped (it has no one true group). The strings are shuffled
(`--seed`) and given to the grouper as a ranked list, exactly as `python -m llm2labels.group` would, with the
grouper composed from `conf/grouper/<name>.yaml` (`key=value` overrides its keys). Scores:
- ARI: scikit-learn's adjusted Rand index of the predicted synsets against the classes;
- pairwise P / R / F1: a pair of strings is predicted when they share a synset, true when they share a class;
- classes merged: classes with a string in a synset that also holds another class's string.
`--baselines` adds, per list, the ARI of grouping by each string's first WordNet noun sense alone and of
MiniLM average linkage at its best threshold for that list (0.30..0.95): the two single sources.
Extra row `ade20k_150 names`: the 150 primary class names of A-150, where any merge is an error.
`--timing` also times `python -m llm2labels.group` on 5,000 labels in a fresh process (model loading and
imports included). One row per list, printed as a Markdown table, then as one JSON object.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llm2labels.classes import available_class_lists, load_class_list
from llm2labels.normalize import normalize_label
from llm2labels.scoring.rank import RankedLabel

NAMES_ROW = "ade20k_150 names"


def ground_truth(name: str) -> tuple[list[str], list[int]]:
    """Strings of a class list (normalised, unambiguous, sorted) and the index of the class of each."""
    owners: dict[str, set[int]] = {}
    for index, info in enumerate(load_class_list(name)):
        for synonym in info.synonyms:
            text = normalize_label(synonym)
            if text:
                owners.setdefault(text, set()).add(index)
    strings = sorted(s for s, classes in owners.items() if len(classes) == 1)
    return strings, [next(iter(owners[s])) for s in strings]


def primary_names(name: str) -> tuple[list[str], list[int]]:
    """Each class's primary name, normalised (classes whose names collide are dropped)."""
    names = [normalize_label(c.name) for c in load_class_list(name)]
    texts = Counter(names)
    rows = [(t, i) for i, t in enumerate(names) if t and texts[t] == 1]
    return [t for t, _ in rows], [i for _, i in rows]


def _pairs(counts: Counter) -> int:
    return sum(n * (n - 1) // 2 for n in counts.values())


def pair_counts(assigned: Sequence[int], truth: Sequence[int]) -> tuple[int, int, int]:
    """(true positive pairs, predicted pairs, true pairs) of a cluster id per string against a class id."""
    return _pairs(Counter(zip(assigned, truth))), _pairs(Counter(assigned)), _pairs(Counter(truth))


def prf(tp: int, predicted: int, true: int) -> tuple[float, float, float]:
    p = tp / predicted if predicted else 1.0
    r = tp / true if true else 1.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def classes_merged(assigned: Sequence[int], truth: Sequence[int]) -> int:
    """Classes that share a predicted group with another class."""
    classes_in: dict[int, set[int]] = {}
    for cluster, cls in zip(assigned, truth):
        classes_in.setdefault(cluster, set()).add(cls)
    return len({c for classes in classes_in.values() if len(classes) > 1 for c in classes})


def as_ranked(labels: Sequence[str]) -> list[RankedLabel]:
    return [RankedLabel(i, label, 1.0 / i, 0.0, 0.0, 0, [label]) for i, label in enumerate(labels, start=1)]


def score(grouper: Any, strings: Sequence[str], truth: Sequence[int], seed: int) -> dict[str, Any]:
    """Group the shuffled strings and score the synsets against `truth` (see the module docstring)."""
    from sklearn.metrics import adjusted_rand_score

    order = list(range(len(strings)))
    random.Random(seed).shuffle(order)
    start = time.perf_counter()
    vocab = grouper(as_ranked([strings[i] for i in order]))
    seconds = time.perf_counter() - start
    synset_of = {m: k for k, s in enumerate(vocab["synsets"]) for m in s["members"]}
    assigned = [synset_of[s] for s in strings]
    p, r, f1 = prf(*pair_counts(assigned, truth))
    return {"strings": len(strings), "classes": len(set(truth)), "synsets": len(vocab["synsets"]),
            "ARI": adjusted_rand_score(truth, assigned), "P": p, "R": r, "F1": f1,
            "classes_merged": classes_merged(assigned, truth), "seconds": seconds}


def timing_labels(n: int = 5000) -> list[str]:
    """`n` distinct labels: every shipped list's names, then adjective + noun compounds of them."""
    names = list(dict.fromkeys(normalize_label(s) for lst in available_class_lists()
                               for c in load_class_list(lst) for s in c.synonyms))
    names = [s for s in names if s]
    adjectives = ("red", "small", "wooden", "old", "white", "metal", "large", "green")
    extra = (f"{a} {s}" for a in adjectives for s in names)
    labels = list(dict.fromkeys([*names, *extra]))[:n]
    random.Random(0).shuffle(labels)
    return labels


def time_cli(grouper: str, overrides: Sequence[str], n: int = 5000) -> float:
    """Wall seconds of `python -m llm2labels.group` on `n` labels in a fresh process."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "labels.txt"
        path.write_text("\n".join(timing_labels(n)) + "\n", encoding="utf-8")
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "llm2labels.group", str(path), "--grouper", grouper,
                        "-o", str(Path(tmp) / "out"), *overrides], check=True, capture_output=True)
        return time.perf_counter() - start


def first_sense_ari(strings: Sequence[str], truth: Sequence[int], lexicon: Any = None) -> float:
    """ARI of grouping each string by its first WordNet noun sense alone (unknown strings alone).
    `lexicon`: a grouping.lexicon.Lexicon to reuse (default: one over the packaged WordNet)."""
    from sklearn.metrics import adjusted_rand_score

    if lexicon is None:
        from llm2labels.grouping.lexicon import Lexicon
        from llm2labels.grouping.wordnet_data import load_wordnet

        lexicon = Lexicon(load_wordnet())
    keys = [next(iter(lexicon.senses(s)), None) for s in strings]
    return adjusted_rand_score(truth, [k.synset if k else f"\0{s}" for k, s in zip(keys, strings)])


def cluster_ids(clusters: Sequence[Sequence[int]], n: int) -> list[int]:
    """Each of `n` rows' cluster number, from clusters of row indices."""
    assigned = [0] * n
    for k, rows in enumerate(clusters):
        for row in rows:
            assigned[row] = k
    return assigned


def embedding_best_ari(strings: Sequence[str], truth: Sequence[int], embedder: Any = None) -> tuple[float, float]:
    """(best ARI, its threshold) of MiniLM average linkage over thresholds 0.30, 0.35, ..., 0.95.
    `embedder`: an EmbeddingGrouper to reuse (default: a new one)."""
    from sklearn.metrics import adjusted_rand_score

    from llm2labels.grouping.embedding import EmbeddingGrouper, cluster_embeddings

    vectors = (embedder or EmbeddingGrouper()).embed(list(strings))
    best = (-1.0, 0.0)
    for step in range(14):
        threshold = round(0.30 + 0.05 * step, 2)
        assigned = cluster_ids(cluster_embeddings(vectors, threshold), len(strings))
        best = max(best, (adjusted_rand_score(truth, assigned), threshold))
    return best


def print_table(rows: list[dict[str, Any]]) -> None:
    baselines = "first_sense_ARI" in rows[0]
    extra = " first-sense ARI | MiniLM best ARI (thr) |" if baselines else ""
    print(f"| list | strings | classes | synsets | ARI | P | R | F1 | classes merged | s |{extra}")
    print("|---" * (10 + 2 * baselines) + "|")
    for r in rows:
        more = (f" {r['first_sense_ARI']:.3f} | {r['embedding_best_ARI']:.3f} ({r['embedding_best_threshold']:.2f}) |"
                if baselines else "")
        print(f"| {r['list']} | {r['strings']} | {r['classes']} | {r['synsets']} | {r['ARI']:.3f} | "
              f"{r['P']:.3f} | {r['R']:.3f} | {r['F1']:.3f} | {r['classes_merged']} | {r['seconds']:.1f} |{more}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="override keys of the grouper config")
    parser.add_argument("--grouper", default="hybrid", help="a config in conf/grouper (default: hybrid)")
    parser.add_argument("--lists", nargs="+", default=available_class_lists())
    parser.add_argument("--seed", type=int, default=0, help="shuffle seed")
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    parser.add_argument("--timing", action="store_true", help="time the CLI on 5,000 labels (fresh process)")
    parser.add_argument("--baselines", action="store_true",
                        help="add the ARI of each label's first WordNet sense and of MiniLM at its best threshold")
    args = parser.parse_args(argv)
    from llm2labels.group import CONF_DIR, build_grouper

    grouper = build_grouper(args.grouper, CONF_DIR, args.overrides, None)
    data = {**{name: ground_truth(name) for name in args.lists}, NAMES_ROW: primary_names("ade20k_150")}
    rows = [{"list": name, **score(grouper, *truth, args.seed)} for name, truth in data.items()]
    if args.baselines:
        from llm2labels.grouping.embedding import EmbeddingGrouper
        from llm2labels.grouping.lexicon import Lexicon
        from llm2labels.grouping.wordnet_data import load_wordnet

        lexicon, embedder = Lexicon(load_wordnet()), EmbeddingGrouper()  # loaded once for every row
        for row in rows:
            row["first_sense_ARI"] = first_sense_ari(*data[row["list"]], lexicon)
            row["embedding_best_ARI"], row["embedding_best_threshold"] = embedding_best_ari(*data[row["list"]],
                                                                                             embedder)
    result: dict[str, Any] = {"grouper": args.grouper, "overrides": args.overrides, "seed": args.seed,
                              "rows": rows}
    if args.timing:
        result["seconds_5000_labels"] = time_cli(args.grouper, args.overrides)
    print_table(rows)
    if args.timing:
        print(f"\n`python -m llm2labels.group` on 5,000 labels: {result['seconds_5000_labels']:.1f} s")
    text = json.dumps(result, indent=None)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
