import json
import math
import os
import pickle
import random
import subprocess
import sys
import time
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from unittest.mock import patch

import pytest
from oracles import pool_image, sample_occurrences

from llm2labels import postprocess, score_run
from llm2labels.data.folder import ImageEntry
from llm2labels.errors import ConfigError
from llm2labels.grid import Crop
from llm2labels.parsing import label_spans, parse_labels
from llm2labels.postprocess import rank_images, score_image
from llm2labels.proposers.base import token_ends_from_pieces
from llm2labels.scoring import NoFilter, PercentileFilter, TokenAggregator, occ_prob
from llm2labels.store import SampleStore, sample_key, skip_key
from llm2labels.work import RunKeys

ROOT = Path(__file__).resolve().parents[1]


def _record(pieces: list[str], probs: list[float]) -> dict:
    text, ends = token_ends_from_pieces(pieces)
    return {"text": text, "token_ends": ends, "logprobs": [math.log(p) for p in probs]}


# "['Trees', 'sky']" as tokens: "['", "Tre", "es", "', '", "sky", "']"
TREES_SKY = _record(["['", "Tre", "es", "', '", "sky", "']"], [0.9, 0.5, 0.8, 0.9, 0.6, 0.9])


def test_each_label_is_scored_from_its_own_tokens():
    occ = list(sample_occurrences(TREES_SKY, TokenAggregator("product")))
    assert [(label, form) for label, form, _ in occ] == [("tree", "Trees"), ("sky", "sky")]
    assert occ[0][2] == pytest.approx(0.5 * 0.8) and occ[1][2] == pytest.approx(0.6)
    mins = [p for *_, p in sample_occurrences(TREES_SKY, TokenAggregator("min"))]
    assert mins == pytest.approx([0.5, 0.6])


def test_image_pools_over_samples_then_filters():
    second = _record(["['", "tree", "', '", "car", "']"], [0.9, 0.7, 0.9, 0.2, 0.9])
    r = score_image("u", "a.jpg", [TREES_SKY, second], TokenAggregator("product"), "max", NoFilter())
    # tree: max(0.4, 0.7) from 2 samples; sky 0.6 from 1; car 0.2 from 1
    assert r.labels["tree"] == (pytest.approx(0.7), 2)
    assert r.labels["sky"] == (pytest.approx(0.6), 1) and r.labels["car"] == (pytest.approx(0.2), 1)
    assert r.surface["tree"] == ["Trees", "tree"]
    # 68th percentile of [0.7, 0.6, 0.2] (linear) = 0.6 + 0.36 * 0.1 = 0.636 -> only tree survives
    kept = score_image("u", "a.jpg", [TREES_SKY, second], TokenAggregator("product"), "max", PercentileFilter(68))
    assert kept.kept == {"tree": pytest.approx(0.7)}


def test_dataset_ranking_from_two_images():
    a = score_image("u1", "a", [TREES_SKY], TokenAggregator("product"), "max", NoFilter())
    b = score_image("u2", "b", [_record(["['", "sky", "']"], [1.0, 0.8, 1.0])], TokenAggregator("product"),
                    "max", NoFilter())
    ranked = rank_images([a, b]).rank(occ_prob)
    # sky: occ 2/2, prob mean(0.6, 0.8) = 0.7 -> 0.7; tree: occ 1/2, prob 0.4 -> 0.2
    assert [(r.label, r.score) for r in ranked] == [("sky", pytest.approx(0.7)), ("tree", pytest.approx(0.2))]


# --- the fast paths against the plain reading, and worker processes against one process ---------------------

WORDS = ["sky", "Trees", "palm tree", "t-shirt", "people's hats", "Cars", "glasses", "a b c d e f g",
         "ü-bahn", "one two three four five six", "traffic_light", "1. dog", "", "bus", "(window)"]


def _random_record(rng: random.Random, uid: str = "u", k: int = 0) -> dict:
    """A sample of 1-12 labels, each split into 1-3 token pieces; now and then an odd text or log-prob."""
    words = rng.sample(WORDS, rng.randint(1, 12))
    quote = rng.choice(["'", '"'])
    pieces = ["["]
    for j, w in enumerate(words):
        head = ("" if j == 0 else ", ") + quote
        cuts = sorted(rng.sample(range(1, len(w)), min(rng.randint(0, 2), max(len(w) - 1, 0)))) if w else []
        parts = [w[a:b] for a, b in zip([0, *cuts], [*cuts, len(w)])]
        pieces += [head + parts[0], *parts[1:], quote]
    pieces.append("]")
    if rng.random() < 0.1:
        pieces = ["Sure! ", *pieces, "\n1. extra"]  # not a clean list: the general parser
    if rng.random() < 0.1:
        pieces.insert(rng.randrange(len(pieces)), "")  # a zero-width token
    text, ends = token_ends_from_pieces(pieces)
    odd = [math.nan, math.inf, -math.inf, 1e-9, 0.0]
    lps = [rng.choice(odd) if rng.random() < 0.05 else -rng.expovariate(2.0) for _ in ends]
    return {"key": sample_key(uid, "full", k), "text": text, "token_ends": ends, "logprobs": lps}


def _reference(samples: list[dict], aggregate, pool: str, image_filter) -> tuple[dict, dict, dict]:
    """pool_image over every sample's sample_occurrences, then the filter: the method read plainly."""
    occ, surface = [], {}
    for sample_id, record in enumerate(samples):
        for label, form, p in sample_occurrences(record, aggregate):
            occ.append((label, sample_id, p))
            surface.setdefault(label, []).append(form)
    labels = pool_image(occ, pool=pool)
    kept = image_filter({label: s for label, (s, _) in labels.items()})
    return labels, kept, {label: surface[label] for label in kept}


def test_label_spans_agree_with_parse_labels() -> None:
    rng = random.Random(0)
    texts = [_random_record(rng)["text"] for _ in range(300)]
    texts += ["['a b c d e f', 'a b c d e f g']", '["x", \'y\']', "[]", "['sky',]", "sky, tree", "['sky'"]
    for text in texts:
        assert label_spans(text) == [(s.text, s.start, s.end) for s in parse_labels(text)], text


@pytest.mark.parametrize("how", ["product", "avg", "min", "max"])
@pytest.mark.parametrize("pool", ["max", "avg", "product"])
def test_score_image_equals_the_plain_reading(how: str, pool: str) -> None:
    rng = random.Random(f"{how}{pool}")
    cache: dict[str, str] = {}
    for aggregate in (TokenAggregator(how), lambda lps: TokenAggregator(how)(lps) ** 2):  # any callable
        for image_filter in (PercentileFilter(68), NoFilter()):
            for _ in range(40):
                samples = [_random_record(rng, k=k) for k in range(rng.randint(1, 4))]
                got = score_image("u", "a.jpg", samples, aggregate, pool, image_filter, cache)
                labels, kept, surface = _reference(samples, aggregate, pool, image_filter)
                assert got.labels == labels and got.kept == kept and got.surface == surface  # bit for bit


def _store_with_images(root: Path, n: int) -> tuple[SampleStore, list[ImageEntry], list[str]]:
    """n images x 3 samples; image 3 is an unreadable file (skip record), image 5 lacks its last sample."""
    rng = random.Random(1)
    store = SampleStore(root, {"model": "test"})
    uids = [f"img{i:04d}" for i in range(n)]
    records = [_random_record(rng, uid, k) for uid in uids for k in range(3)]
    records = [r for r in records if r["key"] != sample_key(uids[5], "full", 2)]
    records.append({"key": skip_key(uids[3]), "reason": "not an image"})
    rng.shuffle(records)  # where a record sits in the store must not matter
    for part in (records[: len(records) // 2], records[len(records) // 2 :]):  # two writers, two files
        w = store.writer()
        w.write(part)
        w.close()
    store.refresh()
    return store, [ImageEntry(Path(f"{u}.jpg"), f"{u}.jpg") for u in uids], uids


def test_workers_give_the_same_images_jsonl_ranking_and_skips_as_one_process(tmp_path: Path) -> None:
    store, entries, uids = _store_with_images(tmp_path / "cache", 90)
    scoring = postprocess.Scoring(TokenAggregator("product"), "max", PercentileFilter(68))
    crops = [Crop("full", (0.0, 0.0, 1.0, 1.0), 3)]
    runs = {}
    for workers in (1, 2, 3):
        out = tmp_path / f"w{workers}.jsonl"
        usable, skipped = score_run.select(entries, uids, crops, store, max_pixels=10**8)
        with patch.object(postprocess, "CHUNK", 7):  # 84 usable images: 12 chunks, shared out unevenly
            results = list(score_run.score_all(usable, store, scoring, out, workers))
        runs[workers] = (out.read_bytes(), skipped, rank_images(results).rank(occ_prob), results)
    serial_jsonl, serial_skipped, serial_ranked, serial_results = runs[1]
    missing = "samples missing (generation did not finish)"
    assert serial_skipped == [{"path": "img0003.jpg", "reason": "not an image"},
                              {"path": "img0005.jpg", "reason": missing}]
    lines = [json.loads(x) for x in serial_jsonl.decode().splitlines()]
    assert [x["uid"] for x in lines] == [u for u in uids if u not in ("img0003", "img0005")]
    # one image by hand: its three stored samples through the plain reading
    first = [store.get(sample_key("img0000", "full", k)) for k in range(3)]
    labels, kept, _ = _reference(first, TokenAggregator("product"), "max", PercentileFilter(68))
    assert lines[0]["kept"] == kept and lines[0]["labels"] == {k: list(v) for k, v in labels.items()}
    for workers in (2, 3):
        jsonl, skipped, ranked, results = runs[workers]
        assert jsonl == serial_jsonl and skipped == serial_skipped
        assert ranked == serial_ranked  # bit for bit: the main process ranks the images in dataset order
        assert results == serial_results


def test_store_reader_survives_pickling(tmp_path: Path) -> None:
    store, _, uids = _store_with_images(tmp_path, 8)
    reader = pickle.loads(pickle.dumps(store.reader()))
    loc = store.locate(sample_key(uids[0], "full", 1))
    assert reader.read(loc) == store.get(sample_key(uids[0], "full", 1))
    assert store.locate("nope") is None
    reader.close()


class _PidFilter:
    """Keeps everything and adds a label naming the process that scored the image."""

    def __call__(self, scores: dict[str, float]) -> dict[str, float]:
        return {**scores, f"pid {os.getpid()}": 1.0}


def _chunks(store: SampleStore, uids: list[str], size: int) -> list[postprocess.Chunk]:
    """The chunks of three samples per image that score_run hands the workers."""
    keys = RunKeys([Crop("full", (0.0, 0.0, 1.0, 1.0), 3)])
    return list(score_run.Usable(uids, uids, keys.positions(uids, store), keys.columns).chunks(store, size))


def test_chunks_are_scored_in_worker_processes_and_come_back_in_order(tmp_path: Path) -> None:
    store, _, uids = _store_with_images(tmp_path, 40)
    images = [u for u in uids if u not in ("img0003", "img0005")]
    scoring = postprocess.Scoring(TokenAggregator("product"), "max", _PidFilter())
    chunks = list(postprocess.score_stored(_chunks(store, images, 3), store.reader(), scoring, workers=2))
    results = [r for _, part in chunks for r in part]
    assert [len(part) for _, part in chunks] == [3] * 12 + [2]
    assert [r.uid for r in results] == images
    pids = {label for r in results for label in r.kept if label.startswith("pid ")}
    assert len(pids) == 2 and f"pid {os.getpid()}" not in pids
    serial = list(postprocess.score_stored(_chunks(store, images, 3), store.reader(), scoring, workers=1))
    assert {label for _, part in serial for r in part for label in r.kept if label.startswith("pid ")} == {
        f"pid {os.getpid()}"}


def test_workers_setting() -> None:
    assert postprocess.resolve_workers(None) == postprocess.default_workers() >= 1
    assert postprocess.resolve_workers(3) == 3
    for bad in (0, -1, 2.5, "2", True):
        with pytest.raises(ConfigError, match="postprocess.workers"):
            postprocess.resolve_workers(bad)


class _DieInWorker:
    """Kills the worker process that calls it, as the out-of-memory killer would."""

    def __init__(self, parent: int) -> None:
        self.parent = parent

    def __call__(self, scores: dict[str, float]) -> dict[str, float]:
        if os.getpid() != self.parent:
            os._exit(1)
        return dict(scores)


def test_a_dead_worker_fails_the_run_instead_of_hanging_it(tmp_path: Path) -> None:
    store, _, uids = _store_with_images(tmp_path, 12)
    scoring = postprocess.Scoring(TokenAggregator("product"), "max", _DieInWorker(os.getpid()))
    with pytest.raises(BrokenProcessPool):
        list(postprocess.score_stored(_chunks(store, uids[6:], 2), store.reader(), scoring, workers=2))


WORKER_PARENT = """
import os, sys, time
from llm2labels import postprocess

def hold(images):  # a worker busy with its chunk; records its pid
    with open(sys.argv[1], "a") as fh:
        fh.write(f"{os.getpid()}\\n")
    time.sleep(60)

postprocess._worker_chunk = hold
list(postprocess.score_stored([None] * 2, None, None, workers=2))  # two chunks, one per worker
"""


@pytest.mark.slow
def test_workers_end_when_their_parent_is_killed(tmp_path):
    """kill -9 of the scoring process (not of its process group) must not leave its workers running."""
    pids = tmp_path / "pids"
    parent = subprocess.Popen([sys.executable, "-c", WORKER_PARENT, str(pids)], cwd=ROOT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(pids.read_text().split() if pids.exists() else []) < 2:
        time.sleep(0.1)
    workers = [int(p) for p in pids.read_text().split()]
    assert len(workers) == 2
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(p) for p in workers):
        time.sleep(0.1)
    left = [p for p in workers if _alive(p)]
    for pid in left:  # do not leave them behind when the test fails
        os.kill(pid, 9)
    assert not left


def _alive(pid: int) -> bool:
    """Running (a zombie waiting to be reaped by whoever adopted it counts as ended)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"
