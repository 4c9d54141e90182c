"""Choose the embedding grouper's threshold: cluster the synonyms of packaged class lists at each threshold.

Ground truth: each class of a list is one group of its synonyms after `normalize_label`; a string that
normalises into several classes of the same list is dropped. All remaining strings of the list are clustered
with `EmbeddingGrouper` (the shipped code path) and scored pairwise: a pair of strings is predicted when they
share a cluster and true when they share a class; P = TP / predicted pairs, R = TP / true pairs.
"mean F1" averages the per-list F1 (each benchmark counts once); "pooled" sums the pairs over lists.

Constraints, on a street/park label list a VLM would give (SCENE): motorbike and motorcycle together; tree,
sky and building in three different synsets; and, the general form of the latter, no "wrong merge": no two
scene labels in one synset that a reference list (ade20k_150 or coco_panoptic) puts in different classes
(car/truck, bicycle/motorcycle, building/skyscraper, ...). The chosen threshold is the best mean F1 among those
meeting all three; the best meeting only the first two is printed too. Also shown: whether "wooden bench"
stays apart from "bench" (then the hierarchy can put it under "bench").

    python -m experiments.embedding_threshold_sweep [--lists ade20k_150 coco_panoptic ...] [--linkage average]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from experiments.grouping_benchmark import cluster_ids, ground_truth, prf
from experiments.grouping_benchmark import pair_counts as assigned_pair_counts
from llm2labels.grouping.embedding import EmbeddingGrouper, cluster_embeddings

LISTS = ("ade20k_150", "coco_panoptic", "pascal_ctx_59", "ade20k_847")
REFERENCE = ("ade20k_150", "coco_panoptic")  # class lists that say which scene labels are distinct
THRESHOLDS = tuple(round(0.4 + 0.05 * i, 2) for i in range(11))  # 0.40 .. 0.90


def scene_labels() -> list[str]:
    """The constraint list: labels a VLM gives for street and park photos."""
    text = ("sky|tree|building|road|car|person|motorbike|motorcycle|palm tree|grass|bench|wooden bench|house|"
            "window|cloud|street|sidewalk|skyscraper|bus|truck|bicycle|traffic light|pole|sign|fence|mountain|"
            "water|boat|dog|man|woman|flower|bush|lamp post|wall|door")
    return text.split("|")


def pair_counts(clusters: list[list[int]], truth: list[int]) -> tuple[int, int, int]:
    """(true positive pairs, predicted pairs, true pairs) of clusters of row indices against class ids."""
    return assigned_pair_counts(cluster_ids(clusters, len(truth)), truth)


def distinct_pairs(labels: list[str]) -> set[frozenset[str]]:
    """Pairs of `labels` that some reference list puts in different classes (so must not be merged)."""
    pairs: set[frozenset[str]] = set()
    for name in REFERENCE:
        strings, truth = ground_truth(name)
        class_of = dict(zip(strings, truth))
        known = [label for label in labels if label in class_of]
        pairs.update(frozenset((a, b)) for i, a in enumerate(known) for b in known[i + 1:]
                     if class_of[a] != class_of[b])
    return pairs


def constraints(embeddings: np.ndarray, labels: list[str], threshold: float, linkage: str,
                distinct: set[frozenset[str]]) -> dict[str, Any]:
    cluster_of = {}
    for cluster_id, rows in enumerate(cluster_embeddings(embeddings, threshold, linkage)):
        cluster_of.update({labels[row]: cluster_id for row in rows})
    moto = cluster_of["motorbike"] == cluster_of["motorcycle"]
    apart = len({cluster_of["tree"], cluster_of["sky"], cluster_of["building"]}) == 3
    wrong = sorted("/".join(sorted(pair)) for pair in distinct if len({cluster_of[x] for x in pair}) == 1)
    bench = cluster_of["bench"] != cluster_of["wooden bench"]
    return {"moto": moto, "apart": apart, "bench": bench, "wrong": wrong}


def sweep(grouper: EmbeddingGrouper, lists: list[str]) -> list[dict[str, Any]]:
    """One row per threshold: pooled P/R/F1, per-list F1 and cluster counts, and the constraint checks."""
    data = {name: ground_truth(name) for name in lists}
    vectors = {name: grouper.embed(strings) for name, (strings, _) in data.items()}
    scene = scene_labels()
    scene_vectors, distinct = grouper.embed(scene), distinct_pairs(scene)
    print("strings per list: " + ", ".join(f"{n} {len(s)} ({len(set(c))} classes)" for n, (s, c) in data.items()))
    rows = []
    for threshold in THRESHOLDS:
        totals, f1s, sizes = np.zeros(3, dtype=np.int64), [], []
        for name, (_, truth) in data.items():
            clusters = cluster_embeddings(vectors[name], threshold, grouper.linkage)
            counts = pair_counts(clusters, truth)
            totals += counts
            f1s.append(prf(*counts)[2])
            sizes.append(len(clusters))
        p, r, f1 = prf(*map(int, totals))
        rows.append({"threshold": threshold, "P": p, "R": r, "F1": f1, "mean_f1": float(np.mean(f1s)),
                     "f1s": f1s, "sizes": sizes,
                     **constraints(scene_vectors, scene, threshold, grouper.linkage, distinct)})
    return rows


def print_table(rows: list[dict[str, Any]], lists: list[str]) -> None:
    print(f"| thr | P | R | F1 | mean F1 | {' | '.join(f'F1 {n}' for n in lists)} | clusters "
          f"({'/'.join(lists)}) | moto together | tree/sky/building apart | wrong merges | bench apart |")
    print("|" + "---|" * (10 + len(lists)))
    for row in rows:
        yes = {k: "yes" if row[k] else "no" for k in ("moto", "apart", "bench")}
        print(f"| {row['threshold']:.2f} | {row['P']:.3f} | {row['R']:.3f} | {row['F1']:.3f} | "
              f"{row['mean_f1']:.3f} | {' | '.join(f'{v:.3f}' for v in row['f1s'])} | "
              f"{'/'.join(map(str, row['sizes']))} | {yes['moto']} | {yes['apart']} | "
              f"{len(row['wrong'])} {' '.join(row['wrong'][:4])}{' ...' if len(row['wrong']) > 4 else ''} | "
              f"{yes['bench']} |")


def best(rows: list[dict[str, Any]], strict: bool) -> dict[str, Any] | None:
    ok = [r for r in rows if r["moto"] and r["apart"] and (not strict or not r["wrong"])]
    return max(ok, key=lambda r: r["mean_f1"]) if ok else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lists", nargs="+", default=list(LISTS))
    parser.add_argument("--linkage", default="average")
    args = parser.parse_args()
    start = time.time()
    rows = sweep(EmbeddingGrouper(linkage=args.linkage), args.lists)
    print_table(rows, args.lists)
    for strict, what in ((False, "moto together, tree/sky/building apart"), (True, "moto together, tree/sky/building apart, no wrong merge")):
        row = best(rows, strict)
        print(f"best mean F1 with {what}: " +
              (f"{row['threshold']:.2f} (mean F1 {row['mean_f1']:.3f})" if row else "none"))
    print(f"linkage {args.linkage}; took {time.time() - start:.1f} s")


if __name__ == "__main__":
    main()
