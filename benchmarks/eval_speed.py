"""Time to evaluate a 5,000-label ranked list against A-847 for 2,000 images (vocabulary + image level).

Prints one JSON object. Labels are the A-847 synonyms (normalised differently: plurals, capitals) mixed with
made-up words, so matching does real work; each image has ~10 ground-truth classes and ~15 scored labels.
`python benchmarks/eval_speed.py [--labels 5000] [--images 2000] [--classes ade20k_847]`
"""

from __future__ import annotations

import argparse
import json
import random
import time

from llm2labels.evaluation.image import image_class_scores, image_metrics
from llm2labels.evaluation.matching import ClassMatcher
from llm2labels.evaluation.vocabulary import evaluate_ranked


def synthetic(classes: str, n_labels: int, n_images: int, seed: int = 0) -> tuple[list[str], list, list]:
    rng = random.Random(seed)
    matcher = ClassMatcher.from_name(classes)
    synonyms = [s for c in matcher.classes for s in c.synonyms]
    words = [f"thing{i}" for i in range(n_labels)]
    pool = [s.title() if rng.random() < 0.3 else s for s in synonyms] + words
    labels = list(dict.fromkeys(rng.sample(pool, min(n_labels, len(pool)))))
    truths = [set(rng.sample(range(len(matcher.classes)), 10)) for _ in range(n_images)]
    preds = [{rng.choice(labels): rng.random() for _ in range(15)} for _ in range(n_images)]
    return labels, preds, truths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--labels", type=int, default=5000)
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--classes", default="ade20k_847")
    args = ap.parse_args()
    labels, preds, truths = synthetic(args.classes, args.labels, args.images)
    matcher = ClassMatcher.from_name(args.classes)
    seen = sorted(set().union(*truths))
    out = {"labels": len(labels), "images": len(preds), "classes": args.classes}
    for run in ("cold", "warm"):  # cold: every label normalised for the first time (inflect); warm: cached
        t0 = time.perf_counter()
        evaluate_ranked(labels, args.classes, seen=seen)
        t1 = time.perf_counter()
        image_metrics([image_class_scores(p, matcher) for p in preds], truths, len(matcher.classes))
        t2 = time.perf_counter()
        out[run] = {"vocabulary_s": round(t1 - t0, 4), "image_s": round(t2 - t1, 4), "total_s": round(t2 - t0, 4)}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
