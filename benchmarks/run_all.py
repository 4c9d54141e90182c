"""Every throughput figure in one JSON object (what `make bench` prints), each beside its target.

Runs, in this order: the proposal-stage overhead and prefill count (tiny InstructBLIP, CPU), the
post-processing of a synthetic 25,000-image store (in a subprocess, for its own peak RSS), per occurrence
and from parsed columns (the parse pass, one job, a 12-job sweep: columns_bench), and the GPU
throughput script as a smoke run on the tiny model on CPU (its real figures need a GPU and the weights).
Anything the parts print (Lightning, tokenizer training) goes to stderr; stdout holds the JSON alone.

`python -m benchmarks.run_all [--store-dir DIR] [--images 25000] [--repeats 5]`
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path
from typing import Any

import torch

from benchmarks import columns_bench, gpu_throughput, postprocess_bench, proposal_bench
from benchmarks.common import stdout_to_stderr


def figures(proposal: dict[str, Any], post: dict[str, Any], columns: dict[str, Any]) -> dict[str, Any]:
    """The figures, each with its target and whether it is met."""
    images, target_s = post["images_scored"], post["target_seconds"]
    return {
        "overhead_ratio": {"value": proposal["overhead_ratio"], "target": f"<= {proposal['overhead_target']}",
                           "meets": proposal["overhead_ratio"] <= proposal["overhead_target"],
                           "cpu_time_ratio": proposal["overhead_ratio_cpu"],
                           "runs": proposal["overhead_ratio_runs"]},
        "prefill_calls_per_crop": proposal["prefill_calls_per_crop"],
        "postprocess_seconds": {"value": post["postprocess_seconds"], "cpu_seconds": post["cpu_seconds"],
                                "images": images, "target": f"< {target_s}", "meets": post["meets_target"]},
        "postprocess_images_per_s": {"value": post["postprocess_images_per_s"], "meets": post["meets_target"],
                                     "target": f">= {round(images / target_s, 1)}"},
        "peak_rss_mb": {"value": post["peak_rss_mb"], "after_imports_mb": post["rss_after_imports_mb"],
                        "index_keys": post["index_keys"],
                        "store_mb": post["store_mb"], "records": post["records"],
                        "target": "flat: not all samples in memory (peak - imports << store size)"},
        "columns_parse_images_per_s": columns["targets"]["parse_images_per_s"],
        "columns_job_images_per_s": {**columns["targets"]["job_images_per_s"], "seconds": columns["job_s"]},
        "columns_sweep_seconds": {"value": columns["sweep_s"], "jobs": columns["sweep_jobs"]},
        "columns_peak_rss_mb": columns["targets"]["peak_rss_mb"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store-dir", type=Path, default=None, help="cache of the synthetic store")
    ap.add_argument("--images", type=int, default=postprocess_bench.TARGET_IMAGES)
    ap.add_argument("--profile-images", type=int, default=2500, help="post-processing images to profile")
    ap.add_argument("--repeats", type=int, default=5, help="proposal-stage repeats (median)")
    args = ap.parse_args()
    with stdout_to_stderr():
        proposal = proposal_bench.measure(repeats=args.repeats)
        post = postprocess_bench.measure(images=args.images, store_dir=args.store_dir,
                                         profile_images=args.profile_images)
        columns = columns_bench.measure(images=args.images, store_dir=args.store_dir)
        gpu = gpu_throughput.measure(gpu_throughput.parser().parse_args(
            ["--model", "tiny:instructblip", "--device", "cuda" if torch.cuda.is_available() else "cpu",
             "--images", "8", "--batch-size", "4", "--samples", "8", "--max-new-tokens", "40"]))
    machine = {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
               "cuda": torch.cuda.is_available()}
    print(json.dumps({"machine": machine, "figures": figures(proposal, post, columns), "proposal": proposal,
                      "postprocess": post, "columns": columns, "gpu_throughput_smoke": gpu}, indent=1))


if __name__ == "__main__":
    main()
