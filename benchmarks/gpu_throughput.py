"""Images per hour of a VLM proposer on one GPU (HF, and vLLM when installed), against the bandwidth limit.

Each image is one crop (grid `base`) sampled `--samples` times with the paper's sampling settings; images
are the embedded photos, cycled and decoded before timing; one untimed warm-up batch. HF time is
`proposer.propose` end to end (processor, vision encoder, prefill, decode loop, log-prob capture,
detokenising), timed with CUDA events after a synchronize on GPU, `time.perf_counter` on CPU.

Memory-bandwidth limit. Decoding is bandwidth bound: every decode step reads all decoder weights once, and
that one read serves every sequence decoded together, so

    limit tokens/s = bandwidth [B/s] / decoder_bytes [B] x concurrent                     (weights only)
    limit tokens/s = bandwidth / (decoder_bytes + concurrent x context x kv_per_token) x concurrent  (+ KV)

with decoder_bytes = language-model parameters (LM head included) x dtype size (the vision encoder and
Q-Former run once per crop, not per token), concurrent = sequences decoded together = batch_size x samples
(HF; vLLM gets max_num_seqs = the same), kv_per_token = 2 (K, V) x layers x kv_heads x head_dim x dtype size,
context = prompt tokens (image tokens included) + half the mean answer. Assumptions: decode stays memory
bound (arithmetic intensity ~ `concurrent` FLOP per weight byte, below the GPU's ridge point, ~300 on H100
bf16); prefill, vision encoding, activations and host-side work are ignored (they only lower the measured
figure). `ratio_to_limit` = measured generated tokens/s / limit tokens/s (the same ratio as images/hour to
the limit's images/hour): steps padded after an answer's EOS are wasted decode work and count against it.

HF runs twice by default, with `shared_prefill` on and off (`--prefill`), and reports which share of the
samples the two runs drew alike (`same_samples_as_unshared`: 1.0 in float32; in bfloat16 a different batch
shape may flip a near-tie, after which that answer goes its own way).

`python -m benchmarks.gpu_throughput --model Salesforce/instructblip-vicuna-7b --device cuda [--images 64]`
`python -m benchmarks.gpu_throughput --model tiny:instructblip --device cpu --images 4` (anywhere, seconds)
`python -m benchmarks.gpu_throughput --random-decoder 4096x32 --device cuda` (no weights needed: a random
LLaVA whose decoder has Vicuna-7B's shape, for the decode-side figures of a 7B model)
`... --prefill shared --kv-cache static [--compile]` (HF with a preallocated cache, its decode step compiled)
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import time
from collections.abc import Callable
from typing import Any

import torch
from PIL import Image

from benchmarks.common import language_model, stdout_to_stderr
from llm2labels.data.images import load_rgb
from llm2labels.data.samples import SamplesDataset
from llm2labels.proposers.base import CropRequest
from llm2labels.proposers.hf_hub import DTYPES
from llm2labels.proposers.hf_vlm import HFVLMProposer
from llm2labels.proposers.settings import DEFAULT_PROMPT

# Peak memory bandwidth, GB/s (vendor data sheets); matched against torch.cuda.get_device_name().
BANDWIDTH_GBS = {"A100 40GB": 1555.0, "A100 80GB SXM": 2039.0, "A100 80GB PCIe": 1935.0, "H100 SXM": 3350.0,
                 "H100 PCIe": 2000.0, "H200": 4800.0, "L40S": 864.0, "RTX 4090": 1008.0}
LLAVA_TEMPLATE = "USER: <image>\n{prompt} ASSISTANT:"  # conf/proposer/llava.yaml
SAMPLING = {"top_p": 0.9, "temperature": 0.3, "repetition_penalty": 2.0, "top_k": 50}  # the paper's


def sig(x: float | None, digits: int = 4) -> float | None:
    """`x` to `digits` significant digits (None stays None)."""
    return None if x is None else float(f"{x:.{digits}g}")


def gpu_bandwidth_gbs(name: str, memory_gb: float) -> tuple[str, float] | None:
    """(table key, GB/s) for a device name like "NVIDIA H100 80GB HBM3", or None when not in the table."""
    if "A100" in name:
        key = "A100 40GB" if memory_gb < 50 else "A100 80GB PCIe" if "PCIe" in name else "A100 80GB SXM"
    elif "H100" in name:
        key = "H100 PCIe" if "PCIe" in name else "H100 SXM"
    else:
        key = next((k for k in ("H200", "L40S", "RTX 4090") if k.split()[-1] in name), "")
    return (key, BANDWIDTH_GBS[key]) if key else None


def decoder_bytes(model: torch.nn.Module) -> int:
    """Bytes of the language model's parameters (LM head included, tied weights once)."""
    modules = [language_model(model), model.get_output_embeddings()]
    params = {p.data_ptr(): p for m in modules if m is not None for p in m.parameters()}
    return sum(p.numel() * p.element_size() for p in params.values())


def kv_bytes_per_token(model: torch.nn.Module, dtype_size: int) -> int | None:
    """2 x layers x kv heads x head dim x dtype size, from the text config; None when it lacks the fields."""
    cfg = getattr(model.config, "text_config", model.config)
    layers, heads = getattr(cfg, "num_hidden_layers", None), getattr(cfg, "num_attention_heads", None)
    if not layers or not heads:
        return None
    kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    return 2 * layers * kv_heads * head_dim * dtype_size


def limits(bandwidth_gbs: float | None, weights: int, kv_token: int | None, concurrent: int,
           context: float) -> dict[str, float | None]:
    if not bandwidth_gbs:
        return {"tokens_per_s": None, "tokens_per_s_with_kv": None}
    bw = bandwidth_gbs * 1e9
    with_kv = None if kv_token is None else bw / (weights + concurrent * context * kv_token) * concurrent
    return {"tokens_per_s": bw / weights * concurrent, "tokens_per_s_with_kv": with_kv}


def timer(device: torch.device) -> Callable[[Callable[[], Any]], tuple[float, Any]]:
    """Seconds of `fn()`: CUDA events after a synchronize on GPU, perf_counter elsewhere."""

    def run(fn: Callable[[], Any]) -> tuple[float, Any]:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            out = fn()
            end.record()
            torch.cuda.synchronize(device)
            return start.elapsed_time(end) / 1000.0, out
        t0 = time.perf_counter()
        out = fn()
        return time.perf_counter() - t0, out

    return run


def photos(n: int) -> list[Image.Image]:
    decoded = [load_rgb(e.path) for e in SamplesDataset().entries()]
    return list(itertools.islice(itertools.cycle(decoded), n))


def template_for(model: str, template: str | None) -> str:
    return template or (LLAVA_TEMPLATE if "llava" in model.lower() else "{prompt}")


def figures(images: int, tokens: int, seconds: float, lim: dict[str, float | None]) -> dict[str, Any]:
    """Throughput and its ratio to each limit (unrounded limits in, rounded figures out)."""
    tps = tokens / seconds
    ratios = {"ratio_to_limit" + k.removeprefix("tokens_per_s"): sig(tps / v) if v else None
              for k, v in lim.items()}
    return {"generated_tokens": tokens, "seconds": round(seconds, 4),
            "images_per_hour": sig(images / seconds * 3600), "tokens_per_s": sig(tps),
            "limit": {k: sig(v) for k, v in lim.items()}, **ratios}


def hf_proposer(args: argparse.Namespace, shared: bool) -> HFVLMProposer:
    """The proposer under test, set up on `args.device` (a sized random LLaVA for `--random-decoder`)."""
    dtype = args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32")
    model = "tiny:llava" if args.random_decoder else args.model
    p = HFVLMProposer(model=model, template=template_for(model, args.template), dtype=dtype,
                      max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                      shared_prefill=shared, kv_cache=args.kv_cache if shared else "dynamic",
                      compile=args.compile and shared, **SAMPLING)  # the unshared run: HF's dynamic cache
    if not args.random_decoder:
        p.setup(args.device)
        return p
    from llm2labels.proposers.tiny import sized_llava

    hidden, layers = (int(x) for x in args.random_decoder.lower().split("x"))
    p.attach(*sized_llava(hidden, layers, args.device, DTYPES[dtype], args.image_tokens))
    return p


def run_hf(args: argparse.Namespace, images: list[Image.Image], bandwidth: float | None,
           shared: bool = True) -> tuple[dict[str, Any], list[list[int]]]:
    """The HF figures and every sample's tokens (to compare the prefill modes)."""
    p = hf_proposer(args, shared)
    timed, seeds = timer(p.hf_model.device), itertools.count()
    requests = [CropRequest(im, [next(seeds) for _ in range(args.samples)]) for im in images]
    batches = [requests[i : i + args.batch_size] for i in range(0, len(requests), args.batch_size)]
    p.propose(batches[0])  # warm-up: CUDA context, kernels, allocator
    seconds, samples = 0.0, []
    for batch in batches:
        s, out = timed(lambda b=batch: p.propose(b))
        seconds += s
        samples += [g.token_ids for gens in out for g in gens]
    tokens = sum(len(t) for t in samples)
    text = p.template.replace("{prompt}", p.prompt)  # the prompt as the model sees it, image tokens included
    inputs = p.hf_processor(images=[images[0]], text=[text], return_tensors="pt")
    prompt_len = int(inputs["input_ids"].shape[1])
    weights, kv_token = decoder_bytes(p.hf_model), kv_bytes_per_token(p.hf_model, p.hf_model.dtype.itemsize)
    concurrent = args.batch_size * args.samples
    context = prompt_len + tokens / (len(images) * args.samples) / 2
    dtype_name = str(p.hf_model.dtype).removeprefix("torch.")
    peak = torch.cuda.max_memory_allocated(p.hf_model.device) if p.hf_model.device.type == "cuda" else None
    return {"backend": "hf", "shared_prefill": shared, "kv_cache": p.kv_cache, "compile": p.compile, "device": str(p.hf_model.device), "dtype": dtype_name,
            "images": len(images), "samples": args.samples, "batch_size": args.batch_size,
            "concurrent_sequences": concurrent,
            "model_bytes": sum(t.numel() * t.element_size() for t in p.hf_model.parameters()),
            "decoder_bytes": weights, "kv_bytes_per_token": kv_token, "prompt_tokens": prompt_len,
            "mean_context_tokens": round(context, 1),
            "peak_gpu_memory_gb": None if peak is None else round(peak / 1e9, 2),
            **figures(len(images), tokens, seconds,
                      limits(bandwidth, weights, kv_token, concurrent, context))}, samples


def run_vllm(args: argparse.Namespace, images: list[Image.Image], bandwidth: float | None,
             hf: dict[str, Any]) -> dict[str, Any]:
    """vLLM with n=samples per image and the sampled token's log-prob; max_num_seqs = HF's concurrency,
    model sizes from the HF run. Not our sampler (its repetition penalty sees the prompt too): a reference."""
    try:
        import vllm
    except ImportError as err:
        return {"backend": "vllm", "skipped": f"vllm is not installed ({err})"}
    if args.model.startswith("tiny:") or args.random_decoder:
        return {"backend": "vllm", "skipped": "tiny and random models are built in-process for HF only"}
    concurrent = args.batch_size * args.samples
    try:
        llm = vllm.LLM(model=args.model, dtype=args.dtype or "bfloat16", max_num_seqs=concurrent,
                       limit_mm_per_prompt={"image": 1})
    except Exception as err:  # e.g. an architecture vLLM does not serve (InstructBLIP)
        return {"backend": "vllm", "error": f"{type(err).__name__}: {err}"[:500]}
    params = vllm.SamplingParams(n=args.samples, max_tokens=args.max_new_tokens, logprobs=0, seed=0,
                                 **SAMPLING)
    text = template_for(args.model, args.template).replace("{prompt}", DEFAULT_PROMPT)
    prompts = [{"prompt": text, "multi_modal_data": {"image": im}} for im in images]
    llm.generate(prompts[: args.batch_size], params, use_tqdm=False)  # warm-up
    t0 = time.perf_counter()
    outs = llm.generate(prompts, params, use_tqdm=False)  # returns when done: no synchronize needed
    seconds = time.perf_counter() - t0
    tokens = sum(len(c.token_ids) for o in outs for c in o.outputs)
    lim = limits(bandwidth, hf["decoder_bytes"], hf["kv_bytes_per_token"], concurrent,
                 hf["mean_context_tokens"])
    return {"backend": "vllm", "images": len(images), "samples": args.samples, "max_num_seqs": concurrent,
            **figures(len(images), tokens, seconds, lim)}


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """The JSON report: the GPU and its bandwidth, then one entry per backend."""
    device = torch.device(args.device)
    gpu, bandwidth = "cpu", args.bandwidth_gbs
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        gpu = props.name
        known = gpu_bandwidth_gbs(props.name, props.total_memory / 1e9)
        if bandwidth is None and known:
            bandwidth = known[1]
    if args.threads or device.type == "cpu":  # one thread: tiny models on a busy CPU (see tests/proposers)
        torch.set_num_threads(args.threads or 1)
    images = photos(args.images)
    modes = {"both": (True, False), "shared": (True,), "unshared": (False,)}[args.prefill]
    runs, samples = [], {}
    for shared in modes:
        hf, samples[shared] = run_hf(args, images, bandwidth, shared)
        runs.append(hf)
        gc.collect()  # this model goes before the next one (or vLLM) claims the GPU memory
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
    if len(samples) == 2:
        pairs = list(zip(samples[True], samples[False], strict=True))
        runs[0]["same_samples_as_unshared"] = round(sum(a == b for a, b in pairs) / len(pairs), 4)
        runs[0]["speedup_over_unshared"] = round(runs[1]["seconds"] / runs[0]["seconds"], 3)
    return {"model": f"random LLaVA, decoder {args.random_decoder}" if args.random_decoder else args.model,
            "gpu": gpu, "bandwidth_gbs": bandwidth, "max_new_tokens": args.max_new_tokens,
            "bandwidth_note": None if bandwidth else "unknown device: pass --bandwidth-gbs for the limit",
            "backends": [*runs, run_vllm(args, images, bandwidth, runs[0])]}


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="Salesforce/instructblip-vicuna-7b",
                    help="HF model id or tiny:<family>")
    ap.add_argument("--random-decoder", default=None, metavar="HIDDENxLAYERS",
                    help="instead of --model: a random LLaVA with a Llama decoder of this shape (4096x32: 7B)")
    ap.add_argument("--image-tokens", type=int, default=576,
                    help="--random-decoder: image tokens in the prompt (a square; LLaVA-1.5: 576)")
    ap.add_argument("--prefill", choices=("both", "shared", "unshared"), default="both",
                    help="HF shared_prefill setting(s) to run")
    ap.add_argument("--kv-cache", choices=("dynamic", "static"), default="dynamic",
                    help="HF KV cache of the shared-prefill run(s)")
    ap.add_argument("--compile", action="store_true", help="HF: compile the decode step (with --kv-cache static)")
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=8, help="crops per generate call")
    ap.add_argument("--samples", type=int, default=8, help="samples per crop")
    ap.add_argument("--max-new-tokens", type=int, default=100)
    ap.add_argument("--dtype", default=None,
                    help="float32 | bfloat16 | float16 | auto (default: bfloat16 on GPU, float32 on CPU)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads (default: 1 on CPU, torch's own on GPU)")
    ap.add_argument("--template", default=None,
                    help="prompt template with {prompt} (default: the LLaVA-1.5 chat format for llava ids)")
    ap.add_argument("--bandwidth-gbs", type=float, default=None,
                    help=f"memory bandwidth in GB/s (default: from the GPU name: {', '.join(BANDWIDTH_GBS)})")
    return ap


def main() -> None:
    args = parser().parse_args()
    with stdout_to_stderr():
        out = measure(args)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
