"""Post-processing throughput from the sample store: 25,000 synthetic images x 8 samples x ~15 labels.

The store holds records in predict.py's exact format (text = a Python-list string of labels drawn from a
Zipf-like vocabulary of ~3,000 class-list strings led by the ADE-150 names; one pseudo-token per label, so
token_ends/logprobs match the text). It is written once, untimed, and reused (under --store-dir, default a
folder in the temp dir). Timed, in a fresh subprocess so its peak RSS (VmHWM) is this run's alone:
`store.refresh()`, `score_run.score_all` over every image (store reads, parse, token aggregator, per-image max
pooling, percentile filter, images.jsonl) in `--workers` processes (default: the app's, one per CPU up to
8), streaming `DatasetRanker` rank, `evaluate_ranked` on ade20k_150. The profile runs in one process (cProfile
sees only its own), so its buckets show where a worker's time goes.
Target: all 25,000 images in under 10 s on the 2-core dev machine.

`python -m benchmarks.postprocess_bench [--images 25000] [--store-dir DIR] [--profile-images 2500]
[--workers N]`
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

from llm2labels.classes import load_class_list
from llm2labels.data.images import DEFAULT_MAX_PIXELS
from llm2labels.grid import Crop, sample_seed
from llm2labels.store import SampleStore, new_writer, sample_key

TARGET_SECONDS = 10.0  # for TARGET_IMAGES
TARGET_IMAGES = 25_000
CROP = Crop("full", (0.0, 0.0, 1.0, 1.0), 8)  # grid "base": the whole image
VOCAB_LISTS = ("ade20k_150", "ade20k_847", "lvis_1203", "pascal_ctx_459", "coco_stuff")
FORMAT_VERSION = 3  # bump when the synthetic records change, so a cached store is not reused


def _names(listed: str) -> list[str]:
    """A class list's names and synonyms that fit inside a quoted list item (no quotes or commas)."""
    return [s for c in load_class_list(listed) for s in (c.name, *c.synonyms)
            if all(ch.isalnum() or ch in " -" for ch in s)]


def vocabulary(seed: int = 0) -> list[str]:
    """~3,000 label strings: ADE-150 names and synonyms first (the frequent head), then the rest shuffled."""
    head = list(dict.fromkeys(_names("ade20k_150")))
    seen = set(head)
    tail = list(dict.fromkeys(s for listed in VOCAB_LISTS[1:] for s in _names(listed) if s not in seen))
    random.Random(seed).shuffle(tail)
    return head + tail


def image_uid(i: int, seed: int) -> str:
    return f"{seed:08x}{i:016x}"  # 24 hex characters, like file_uid


def image_path(i: int) -> str:
    return f"synthetic/{i:06d}.jpg"


class Generator:
    """Deterministic synthetic samples: image i's records depend only on (seed, i)."""

    def __init__(self, samples: int, labels: int, seed: int = 0) -> None:
        self.samples, self.labels, self.seed = samples, labels, seed
        self.vocab = vocabulary(seed)
        # Zipf-like: P(rank r) ~ 1 / r^1.1, as cumulative weights for bisect
        self.cum = list(itertools.accumulate(1.0 / (r + 1) ** 1.1 for r in range(len(self.vocab))))

    def records(self, i: int) -> list[dict[str, Any]]:
        rng = random.Random(f"{self.seed}|{i}")
        scene: list[str] = []  # what the image shows: ~2x the labels a sample names, frequent labels likely
        while len(scene) < 2 * self.labels:
            word = self.vocab[bisect.bisect(self.cum, rng.random() * self.cum[-1])]
            if word not in scene:
                scene.append(word)
        uid = image_uid(i, self.seed)
        out = []
        for k in range(self.samples):
            n = max(1, self.labels + rng.randint(-4, 4))
            chosen = rng.sample(scene, n)
            out.append(self._record(uid, image_path(i), k, [self._surface(w, rng) for w in chosen], rng))
        return out

    @staticmethod
    def _surface(word: str, rng: random.Random) -> str:
        r = rng.random()  # what a VLM varies: capitals, plurals
        if r < 0.05:
            return word.capitalize()
        return word + "s" if r < 0.10 and not word.endswith("s") else word

    def _record(self, uid: str, path: str, k: int, words: list[str], rng: random.Random) -> dict[str, Any]:
        """predict.py's record; pieces "['w0", "', 'w1", ..., "']": one token per label plus the closer."""
        pieces = [("['" if j == 0 else "', '") + w for j, w in enumerate(words)] + ["']"]
        ends = list(itertools.accumulate(len(p) for p in pieces))
        logprobs = [round(-rng.expovariate(2.0), 5) for _ in words] + [-0.01]
        ids = [zlib.crc32(p.encode()) % 32000 for p in pieces]  # any fixed id per piece
        return {"key": sample_key(uid, CROP.key, k), "image": uid, "path": path, "crop": CROP.key,
                "box": list(CROP.box), "sample": k, "seed": sample_seed(self.seed, uid, CROP.key, k),
                "text": "".join(pieces), "token_ids": ids, "token_ends": ends, "logprobs": logprobs,
                "logprob_mode": "raw"}


def fingerprint(images: int, samples: int, labels: int, seed: int) -> dict[str, Any]:
    return {"backend": "synthetic", "model": "synthetic-postprocess-bench", "images": images,
            "samples": samples, "labels": labels, "seed": seed, "format": FORMAT_VERSION}


def write_store(root: Path, images: int, samples: int, labels: int, seed: int = 0,
                images_per_file: int | None = None, processes: int = 1) -> tuple[SampleStore, float]:
    """The synthetic store under `root` (reused when complete) and the seconds spent writing it: one sample
    file, or one per `images_per_file` images (as runs and ranks leave them), written by `processes`."""
    store = SampleStore(root, fingerprint(images, samples, labels, seed))
    done = store.dir / "complete.json"
    if done.exists():
        return store, 0.0
    for old in [*store.dir.glob("samples-*.jsonl"), *store.dir.glob("index/*")]:  # an interrupted write
        old.unlink()
    t0 = time.perf_counter()
    step = images_per_file or images
    parts = [(store.dir, start, min(start + step, images), samples, labels, seed)
             for start in range(0, images, step)]
    if processes > 1 and len(parts) > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(processes) as pool:
            written = sum(pool.map(_write_part, parts))
    else:
        written = sum(map(_write_part, parts))
    done.write_text(json.dumps({"records": written}))
    return store, time.perf_counter() - t0


def _write_part(part: tuple[Path, int, int, int, int, int]) -> int:
    """Images [start, stop) into a sample file of their own; returns the records written."""
    store_dir, start, stop, samples, labels, seed = part
    gen = Generator(samples, labels, seed)
    writer = new_writer(store_dir, f"synthetic{start}")
    for first in range(start, stop, 1000):
        writer.write(r for i in range(first, min(first + 1000, stop)) for r in gen.records(i))
    writer.close()
    return writer.written


def rss_mb(field: str = "VmRSS") -> float:
    """This program's resident set size now (VmRSS) or at its peak since exec (VmHWM), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


# cProfile buckets: name -> (file suffix, function); cumulative seconds. score_image inlines the one-token
# case of token_indices and of the token aggregator, so those two count only labels of several tokens.
BUCKETS = {
    "store_refresh": ("llm2labels/store/samples.py", "refresh"),
    "store_get": ("llm2labels/store/files.py", "read_lines"),  # runs of nearby lines, one read each
    "decode_sample": ("llm2labels/store/files.py", "decode_sample"),  # text/token_ends/logprobs of a line
    "json_loads": ("json/__init__.py", "loads"),  # whole records: only store.get and decode_sample's fallback
    "score_image": ("llm2labels/postprocess.py", "score_image"),
    "parse_labels": ("llm2labels/parsing.py", "label_spans"),  # parse_labels as tuples, with its fast path
    "normalize_label_misses": ("llm2labels/normalize.py", "normalize_label"),
    "token_indices": ("llm2labels/parsing.py", "token_indices"),
    "token_aggregator": ("llm2labels/scoring/aggregate.py", "__call__"),
    "pool_grouped": ("llm2labels/scoring/aggregate.py", "pool_grouped"),
    "percentile_filter": ("llm2labels/scoring/filters.py", "__call__"),
    "ranker_add_image": ("llm2labels/scoring/rank.py", "add_image"),
    "ranker_rank": ("llm2labels/scoring/rank.py", "rank"),
    "evaluate_ranked": ("llm2labels/evaluation/vocabulary.py", "evaluate_ranked"),
}


def postprocess(root: Path, fp: dict[str, Any], limit: int, out_dir: Path, workers: int = 0
                ) -> dict[str, Any]:
    """refresh + score_run.score_all over the first `limit` images (`workers` processes, 0: the app's default)
    + rank + evaluate; seconds per phase."""
    from llm2labels.data.folder import ImageEntry
    from llm2labels.evaluation.vocabulary import evaluate_ranked
    from llm2labels.postprocess import Scoring, default_workers, rank_images
    from llm2labels.score_run import score_all, select
    from llm2labels.scoring.aggregate import TokenAggregator
    from llm2labels.scoring.filters import PercentileFilter
    from llm2labels.scoring.rank import occ_prob

    # The app's default post-processing: product aggregator, max pooling, percentile 68 filter, occ*prob.
    scoring = Scoring(TokenAggregator("product"), "max", PercentileFilter(68.0))
    uids = [image_uid(i, fp["seed"]) for i in range(limit)]
    entries = [ImageEntry(Path(image_path(i)), image_path(i)) for i in range(limit)]
    crops = [Crop(CROP.key, CROP.box, fp["samples"])]
    workers = workers or default_workers()
    t0, cpu0 = time.perf_counter(), time.process_time()
    store = SampleStore(root, fp)
    store.refresh()
    t1 = time.perf_counter()
    usable, skipped = select(entries, uids, crops, store, DEFAULT_MAX_PIXELS)
    scored = score_all(usable, store, scoring, out_dir / "images.jsonl", workers)
    ranker = rank_images(scored)
    ranked = ranker.rank(occ_prob)
    t2 = time.perf_counter()
    metrics = evaluate_ranked([r.label for r in ranked], "ade20k_150")
    t3, cpu3 = time.perf_counter(), time.process_time()
    store.close()
    return {"images_scored": ranker.n_images, "skipped": len(skipped), "index_keys": len(store),
            "workers": workers,
            "ranked_labels": len(ranked), "seconds": round(t3 - t0, 3), "cpu_seconds": round(cpu3 - cpu0, 3),
            "phases_s": {"refresh": round(t1 - t0, 3), "score_and_rank": round(t2 - t1, 3),
                         "evaluate": round(t3 - t2, 3)},
            "ade20k_150_full": metrics["full"]}


def cumulative_seconds(stats: dict[Any, Any], buckets: dict[str, tuple[str, str]]) -> dict[str, float]:
    """Per bucket, the cumulative seconds of the functions named `func` in files ending with `suffix`; `stats`
    is `pstats.Stats(profiler).stats`: (file, line, function) -> (primitive calls, calls, own, cumulative)."""
    return {name: sum(v[3] for (file, _, f), v in stats.items() if f == func and file.endswith(suffix))
            for name, (suffix, func) in buckets.items()}


def profiled(root: Path, fp: dict[str, Any], limit: int, out_dir: Path) -> dict[str, Any]:
    """`postprocess` under cProfile: cumulative seconds per BUCKETS entry, the top functions by own time."""
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    result = profiler.runcall(postprocess, root, fp, limit, out_dir, 1)
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    buckets = {k: round(v, 3) for k, v in cumulative_seconds(stats, BUCKETS).items()}
    top = sorted(stats.items(), key=lambda kv: -kv[1][2])[:12]
    own = [[f"{Path(file).name}:{line}:{func}", round(v[2], 3)] for (file, line, func), v in top]
    return {"images": limit, "profiled_s": result["seconds"], "cumulative_s": buckets, "top_own_time_s": own}


def child_main(args: argparse.Namespace) -> None:
    fp = fingerprint(args.images, args.samples, args.labels, args.seed)
    rss_start = rss_mb()
    import llm2labels.app  # noqa: F401  (the package's imports count in the baseline, not in the run)

    rss_imports = rss_mb()
    with tempfile.TemporaryDirectory() as out:
        if args.profile_images:
            result = profiled(args.store_dir, fp, min(args.profile_images, args.images), Path(out))
        else:
            result = postprocess(args.store_dir, fp, args.images, Path(out), args.workers)
    # VmHWM is this program's own peak: ru_maxrss keeps the parent's RSS at fork across exec on Linux.
    ru_maxrss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    # the largest worker process (0 without workers); it counts the pages it shares with this one
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    workers_mb = children.ru_maxrss / 1024
    print(json.dumps({**result, "rss_start_mb": rss_start, "rss_after_imports_mb": rss_imports,
                      "peak_rss_mb": rss_mb("VmHWM"), "ru_maxrss_mb": round(ru_maxrss_mb, 1),
                      "worker_peak_rss_mb": round(workers_mb, 1),
                      "worker_cpu_seconds": round(children.ru_utime + children.ru_stime, 3)}))


def run_child(store_dir: Path, images: int, samples: int, labels: int, seed: int, profile_images: int = 0,
              workers: int = 0) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks.postprocess_bench", "--child", "--store-dir", str(store_dir),
           "--images", str(images), "--samples", str(samples), "--labels", str(labels), "--seed", str(seed),
           "--profile-images", str(profile_images), "--workers", str(workers)]
    done = subprocess.run(cmd, cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"post-processing child failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(images: int = TARGET_IMAGES, samples: int = 8, labels: int = 15, seed: int = 0,
            store_dir: Path | None = None, profile_images: int = 2500, workers: int = 0) -> dict[str, Any]:
    """Write (or reuse) the store, time the post-processing in a subprocess, optionally profile a subset.

    `workers`: scoring processes (0: the app's default); peak RSS is the main process's (VmHWM), and each
    forked worker's is about the same (they share the imports, and stream their images like it does)."""
    root = Path(store_dir) if store_dir else Path(tempfile.gettempdir()) / "llm2labels-bench-store"
    store, write_s = write_store(root, images, samples, labels, seed)
    run = run_child(root, images, samples, labels, seed, workers=workers)
    size = sum(f.stat().st_size for f in store.dir.glob("samples-*.jsonl"))
    per_s = run["images_scored"] / run["seconds"]
    target_s = TARGET_SECONDS * images / TARGET_IMAGES
    out = {"images_written": images, "samples_per_image": samples, "labels_per_sample": labels,
           "records": images * samples, "store_dir": str(store.dir), "store_mb": round(size / 2**20, 1),
           "store_write_s": round(write_s, 2), "store_reused": write_s == 0.0,
           "postprocess_seconds": run["seconds"], "postprocess_images_per_s": round(per_s, 1),
           "target_seconds": round(target_s, 3), "meets_target": run["seconds"] < target_s, **run}
    if profile_images:
        out["profile"] = run_child(root, images, samples, labels, seed, profile_images)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=TARGET_IMAGES)
    ap.add_argument("--samples", type=int, default=8, help="samples per image (one crop: the whole image)")
    ap.add_argument("--labels", type=int, default=15, help="mean labels per sample (+-4)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--store-dir", type=Path, default=None, help="where the synthetic store is cached")
    ap.add_argument("--profile-images", type=int, default=2500, help="also profile this many images (0: no)")
    ap.add_argument("--workers", type=int, default=0, help="scoring processes (0: the app's default)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child_main(args)
    else:
        print(json.dumps(measure(args.images, args.samples, args.labels, args.seed, args.store_dir,
                                 args.profile_images, args.workers), indent=1))


if __name__ == "__main__":
    main()
