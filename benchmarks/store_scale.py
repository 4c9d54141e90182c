"""How the sample store scales: start-up (index load + plan) and post-processing at 100k and 1M images.

For each size (100,000, then `--images` when larger) a synthetic store of that many images x 8 samples x ~15
labels (postprocess_bench's records, one sample file per 100,000 images as runs and ranks leave them) is
written once, in 2 processes, and cached under `--store-dir`. Then, each in a fresh subprocess so its peak
RSS (VmHWM) is its own:
- `first_load`: the load of a store whose files have no index yet (a store written before indexes existed,
  indexed once: the index files are moved aside, then put back);
- `startup_cold`: the app's start-up with nothing to generate (`store.refresh()`, `look_up`, `plan`,
  and the scoring's `select`) after the store's files were dropped from the page cache
  (posix_fadvise DONTNEED);
- `startup_warm`: the same again;
- `postprocess`: postprocess_bench's run over every image (refresh, select, score in the app's default
  worker processes, rank, evaluate), images/s and peak RSS.
The start-up child also plans 1,000 new images on top of the store and reports the bytes rank 0 broadcasts
to the other ranks (`Plan.compact`) against the pickled list of work items it replaces.

Targets at 1M images on a 2-core machine: start-up < 5 s warm; peak RSS of a run that only post-processes
< 1 GB; post-processing >= 2,700 images/s.

`python -m benchmarks.store_scale --images 1000000 [--store-dir DIR] [--workers N] [--skip-postprocess]`
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import postprocess_bench as pb

SAMPLES, LABELS, SEED = 8, 15, 0
PER_FILE = 100_000
NEW_IMAGES = 1_000  # images added on top of the store, for the broadcast figure
TARGETS = {"startup_warm_s": 5.0, "postprocess_peak_rss_mb": 1024.0, "postprocess_images_per_s": 2700.0}


def evict(store_dir: Path) -> int:
    """Drop the store's files from the page cache (they are clean: the kernel rereads them from disk)."""
    dropped = 0
    for path in [*store_dir.glob("samples-*.jsonl"), *store_dir.glob("index/*.idx")]:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            dropped += os.fstat(fd).st_size
        finally:
            os.close(fd)
    return dropped


def startup(root: Path, images: int, cold: bool) -> dict[str, Any]:
    """The app's start-up with nothing to generate, timed by phase; run in a child process."""
    rss_start = pb.rss_mb()
    import llm2labels.app  # noqa: F401  (the package's imports count in the baseline, not in the run)
    from llm2labels.data.folder import ImageEntry
    from llm2labels.data.images import DEFAULT_MAX_PIXELS
    from llm2labels.grid import Crop
    from llm2labels.score_run import select
    from llm2labels.store import SampleStore
    from llm2labels.work import ImageWork, look_up, plan

    rss_imports = pb.rss_mb()
    fp = pb.fingerprint(images, SAMPLES, LABELS, SEED)
    # the dataset's listing and content ids: what the run holds before the store is opened
    entries = [ImageEntry(Path(pb.image_path(i)), pb.image_path(i)) for i in range(images)]
    uids = [pb.image_uid(i, SEED) for i in range(images)]
    rss_listing = pb.rss_mb()
    crops = [Crop(pb.CROP.key, pb.CROP.box, SAMPLES)]
    store = SampleStore(root, fp)
    evicted = evict(store.dir) if cold else 0
    t0 = time.perf_counter()
    keys = store.refresh()
    t1 = time.perf_counter()
    found = look_up(uids, crops, store, DEFAULT_MAX_PIXELS)  # what app.run does
    needed, hits = found.counts(uids)
    items = plan(entries, uids, crops, SEED, store, DEFAULT_MAX_PIXELS, found)
    t2 = time.perf_counter()
    usable, skipped = select(entries, uids, crops, store, DEFAULT_MAX_PIXELS, found)
    t3 = time.perf_counter()
    peak = pb.rss_mb("VmHWM")
    if len(items) or hits != needed or len(usable) != images or skipped:
        raise RuntimeError(f"the store is incomplete: {len(items)} to generate, {hits}/{needed} stored")
    # 1,000 new images (uids the store has never seen): the plan rank 0 broadcasts
    new = [ImageEntry(Path(f"new/{i}.jpg"), f"new/{i}.jpg") for i in range(NEW_IMAGES)]
    added = plan(entries + new, uids + [f"{i:024x}ffff" for i in range(NEW_IMAGES)], crops, SEED, store,
                 DEFAULT_MAX_PIXELS)
    compact = sum(a.nbytes for a in added.compact())
    listed: list[ImageWork] = list(added)
    return {"images": images, "index_keys": keys, "evicted_mb": round(evicted / 2**20, 1),
            "refresh_s": round(t1 - t0, 3), "plan_s": round(t2 - t1, 3), "select_s": round(t3 - t2, 3),
            "startup_s": round(t3 - t0, 3),
            "rss_after_imports_mb": rss_imports, "rss_after_listing_mb": rss_listing, "peak_rss_mb": peak,
            "rss_start_mb": rss_start, "store_share_mb": round(peak - rss_listing, 1),
            "index_bytes_per_sample": round(store.index.nbytes / max(keys, 1), 1),
            "broadcast": {"new_images": len(added), "compact_bytes": compact,
                          "pickled_items_bytes": len(pickle.dumps(listed)),
                          "full_plan_compact_bytes_if_all_missing": images * (4 + (SAMPLES + 7) // 8)}}


def run_child(mode: str, root: Path, images: int, cold: bool = False) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks.store_scale", "--child", mode, "--store-dir", str(root),
           "--images", str(images)] + (["--cold"] if cold else [])
    done = subprocess.run(cmd, cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{mode} child failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def first_load(root: Path, store_dir: Path, images: int) -> dict[str, Any]:
    """`store.refresh()` of the store with its indexes moved aside (a store from before indexes), timed in
    a child; the indexes it writes are then replaced by the moved ones (the same content)."""
    index_dir, aside = store_dir / "index", store_dir / "index.aside"
    shutil.move(index_dir, aside)
    try:
        return run_child("first_load", root, images, cold=True)
    finally:
        shutil.rmtree(index_dir, ignore_errors=True)
        shutil.move(aside, index_dir)


def child_first_load(root: Path, images: int) -> dict[str, Any]:
    from llm2labels.store import SampleStore

    store = SampleStore(root, pb.fingerprint(images, SAMPLES, LABELS, SEED))
    evict(store.dir)
    t0 = time.perf_counter()
    keys = store.refresh()
    return {"refresh_s": round(time.perf_counter() - t0, 3), "index_keys": keys, "files": store.index.unindexed,
            "peak_rss_mb": pb.rss_mb("VmHWM")}


def measure_size(root: Path, images: int, workers: int, postprocess: bool) -> dict[str, Any]:
    store, write_s = pb.write_store(root, images, SAMPLES, LABELS, SEED, images_per_file=PER_FILE, processes=2)
    size = sum(f.stat().st_size for f in store.dir.glob("samples-*.jsonl"))
    index_size = sum(f.stat().st_size for f in store.dir.glob("index/*.idx"))
    out: dict[str, Any] = {"images": images, "records": images * SAMPLES, "store_mb": round(size / 2**20, 1),
                           "index_files_mb": round(index_size / 2**20, 1),
                           "store_write_s": round(write_s, 1) if write_s else "cached",
                           "first_load": first_load(root, store.dir, images),
                           "startup_cold": run_child("startup", root, images, cold=True),
                           "startup_warm": run_child("startup", root, images)}
    if postprocess:
        run = pb.run_child(root, images, SAMPLES, LABELS, SEED, workers=workers)
        out["postprocess"] = {"seconds": run["seconds"], "images_scored": run["images_scored"],
                              "images_per_s": round(run["images_scored"] / run["seconds"], 1),
                              "phases_s": run["phases_s"], "workers": run["workers"],
                              "peak_rss_mb": run["peak_rss_mb"], "rss_after_imports_mb": run["rss_after_imports_mb"],
                              "worker_peak_rss_mb": run["worker_peak_rss_mb"]}
    return out


def verdict(result: dict[str, Any]) -> dict[str, Any]:
    """The largest size's figures beside their targets."""
    warm = result["startup_warm"]["startup_s"]
    out = {"startup_warm_s": {"value": warm, "target": f"< {TARGETS['startup_warm_s']}",
                              "meets": warm < TARGETS["startup_warm_s"]}}
    if "postprocess" in result:
        post = result["postprocess"]
        out["postprocess_peak_rss_mb"] = {"value": post["peak_rss_mb"], "worker": post["worker_peak_rss_mb"],
                                          "target": f"< {TARGETS['postprocess_peak_rss_mb']}",
                                          "meets": max(post["peak_rss_mb"], post["worker_peak_rss_mb"])
                                          < TARGETS["postprocess_peak_rss_mb"]}
        out["postprocess_images_per_s"] = {"value": post["images_per_s"],
                                           "target": f">= {TARGETS['postprocess_images_per_s']}",
                                           "meets": post["images_per_s"] >= TARGETS["postprocess_images_per_s"]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=1_000_000, help="the largest store (100,000 is also run)")
    ap.add_argument("--store-dir", type=Path, default=Path(tempfile.gettempdir()) / "llm2labels-scale-store")
    ap.add_argument("--workers", type=int, default=0, help="scoring processes (0: the app's default)")
    ap.add_argument("--skip-postprocess", action="store_true", help="start-up figures only")
    ap.add_argument("--child", choices=["startup", "first_load"], help=argparse.SUPPRESS)
    ap.add_argument("--cold", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child == "startup":
        print(json.dumps(startup(args.store_dir, args.images, args.cold)))
        return
    if args.child == "first_load":
        print(json.dumps(child_first_load(args.store_dir, args.images)))
        return
    sizes = sorted({min(100_000, args.images), args.images})
    results = {f"{n}": measure_size(args.store_dir, n, args.workers, not args.skip_postprocess) for n in sizes}
    print(json.dumps({"sizes": results, "targets": verdict(results[f"{sizes[-1]}"]),
                      "machine": {"cpus": os.cpu_count()}}, indent=1))


if __name__ == "__main__":
    main()
