"""Post-processing from parsed columns: the parse pass, one job, and a 12-job sweep over one store.

The store is postprocess_bench's synthetic one (8 samples x ~15 labels per image), written once and cached;
at 1M images it reuses the store-scale benchmark's folder (`$TMPDIR/llm2labels-scale-store`) and
its store (the default above 100,000 images). In a fresh subprocess (so its peak RSS, VmHWM, is its own), after `store.refresh()`:
- `parse`: the first pass, which parses every sample into columns beside the store (`<store>/parsed/`;
  removed first, so it is timed from scratch), in the app's default worker processes;
- `job`: one post-processing job from the columns (`score_run.select` + `score_columns`: pooling, the
  percentile filter, images.jsonl; then the ranking and `evaluate_ranked` on ade20k_150);
- `sweep`: 12 jobs that differ only after the model (filter percentile/th/both/none x aggregator
  product/avg/max, each ranked by occ_prob, occ and prob), one after the other as a Hydra `-m` sweep runs
  them, each reusing the columns.
Targets on a 2-core machine: >= 20,000 images/s for a job, 1M images in < 1 minute with a peak RSS < 1 GB;
the parse pass at least 3x the 1,450 images/s of the per-occurrence code when this benchmark was set.

`python -m benchmarks.columns_bench [--images 25000] [--store-dir DIR] [--workers N]`
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import postprocess_bench as pb

TARGET_IMAGES_PER_S = 20_000
TARGET_PARSE_IMAGES_PER_S = 3 * 1_450
FILTERS = {"percentile": ("PercentileFilter", {"q": 68.0}), "th": ("ThresholdFilter", {"t": 0.3}),
           "both": ("BothFilter", {"q": 68.0, "t": 0.3}), "none": ("NoFilter", {})}
AGGREGATORS = ("product", "avg", "max")


def job(store: Any, entries: list, uids: list, filter_name: str, how: str, workers: int, out: Path
        ) -> dict[str, Any]:
    """One post-processing job from the columns: select, score, rank (three scorers), evaluate."""
    from llm2labels.evaluation.vocabulary import evaluate_ranked
    from llm2labels.grid import Crop
    from llm2labels.postprocess import Scoring
    from llm2labels.score_run import score_columns, select
    from llm2labels.scoring import filters
    from llm2labels.scoring.aggregate import TokenAggregator
    from llm2labels.scoring.rank import occ, occ_prob, prob

    name, params = FILTERS[filter_name]
    scoring = Scoring(TokenAggregator(how), "max", getattr(filters, name)(**params))
    crops = [Crop(pb.CROP.key, pb.CROP.box, store_samples(store))]
    t0 = time.perf_counter()
    usable, _ = select(entries, uids, crops, store, 10**12)
    scored = score_columns(usable, store, scoring, out / "images.jsonl", workers)
    if scored is None:
        raise RuntimeError("the columns could not be used")
    ranker, bad = scored
    ranked = {f.__name__: ranker.rank(f) for f in (occ_prob, occ, prob)}
    metrics = evaluate_ranked([r.label for r in ranked["occ_prob"]], "ade20k_150")
    seconds = time.perf_counter() - t0
    return {"filter": filter_name, "aggregator": how, "seconds": round(seconds, 3), "images": ranker.n_images,
            "damaged": len(bad), "labels": len(ranked["occ_prob"]), "ade20k_150_R": metrics["full"]["R"]}


def store_samples(store: Any) -> int:
    return json.loads((store.dir / "fingerprint.json").read_text())["samples"]


def child(args: argparse.Namespace) -> dict[str, Any]:
    import llm2labels.app  # noqa: F401  (imports count in the baseline)
    from llm2labels.data.folder import ImageEntry
    from llm2labels.parsed.columns import PARSED, Columns, parsed_size
    from llm2labels.postprocess import default_workers
    from llm2labels.store import SampleStore

    rss_imports = pb.rss_mb()
    workers = args.workers or default_workers()
    store = SampleStore(args.store_dir, pb.fingerprint(args.images, 8, 15, 0))
    store.refresh()
    shutil.rmtree(store.dir / PARSED, ignore_errors=True)
    entries = [ImageEntry(Path(pb.image_path(i)), pb.image_path(i)) for i in range(args.images)]
    uids = [pb.image_uid(i, 0) for i in range(args.images)]
    rss_listing = pb.rss_mb()
    t0 = time.perf_counter()
    columns = Columns(store.dir, store.index.files, store.index.covered, workers)
    parse_s = time.perf_counter() - t0
    del columns
    with tempfile.TemporaryDirectory() as out:
        first = job(store, entries, uids, "percentile", "product", workers, Path(out))
        t1 = time.perf_counter()
        sweep = [job(store, entries, uids, f, how, workers, Path(out)) for f in FILTERS for how in AGGREGATORS]
        sweep_s = time.perf_counter() - t1
    images = first["images"]
    return {"images": images, "workers": workers, "parsed_mb": round(parsed_size(store.dir) / 2**20, 1),
            "parse_s": round(parse_s, 2), "parse_images_per_s": round(images / parse_s, 1),
            "job_s": first["seconds"], "job_images_per_s": round(images / first["seconds"], 1),
            "labels": first["labels"], "ade20k_150_R": first["ade20k_150_R"],
            "sweep_jobs": len(sweep), "sweep_s": round(sweep_s, 2),
            "sweep_job_s": [j["seconds"] for j in sweep], "sweep_labels": [j["labels"] for j in sweep],
            "rss_after_imports_mb": rss_imports, "rss_after_listing_mb": rss_listing,
            "peak_rss_mb": pb.rss_mb("VmHWM")}


def measure(images: int = pb.TARGET_IMAGES, store_dir: Path | None = None, workers: int = 0) -> dict[str, Any]:
    default = "llm2labels-scale-store" if images > 100_000 else "llm2labels-bench-store"  # store_scale's, bench's
    root = Path(store_dir) if store_dir else Path(tempfile.gettempdir()) / default
    store, write_s = pb.write_store(root, images, 8, 15, 0, images_per_file=100_000 if images > 100_000 else None,
                                    processes=2)
    cmd = [sys.executable, "-m", "benchmarks.columns_bench", "--child", "--store-dir", str(root),
           "--images", str(images), "--workers", str(workers)]
    done = subprocess.run(cmd, cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"columns child failed ({done.returncode}): {done.stderr[-2000:]}")
    run = json.loads(done.stdout.strip().splitlines()[-1])
    return {"store_dir": str(store.dir), "store_write_s": round(write_s, 1) if write_s else "cached", **run,
            "targets": {
                "job_images_per_s": {"value": run["job_images_per_s"], "target": f">= {TARGET_IMAGES_PER_S}",
                                     "meets": run["job_images_per_s"] >= TARGET_IMAGES_PER_S},
                "parse_images_per_s": {"value": run["parse_images_per_s"],
                                       "target": f">= {TARGET_PARSE_IMAGES_PER_S}",
                                       "meets": run["parse_images_per_s"] >= TARGET_PARSE_IMAGES_PER_S},
                "peak_rss_mb": {"value": run["peak_rss_mb"], "target": "< 1024", "meets": run["peak_rss_mb"] < 1024}}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=pb.TARGET_IMAGES)
    ap.add_argument("--store-dir", type=Path, default=None, help="where the synthetic store is cached")
    ap.add_argument("--workers", type=int, default=0, help="processes (0: the app's default)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args)))
    else:
        print(json.dumps(measure(args.images, args.store_dir, args.workers), indent=1))


if __name__ == "__main__":
    main()
