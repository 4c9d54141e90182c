import json
import os
import subprocess
import sys
import textwrap

import pytest

from llm2labels.store import FileHashes, SampleStore, sample_key, skip_key
from llm2labels.store.files import decode_sample


def stored_keys(store: SampleStore) -> set[str]:
    """Every key the store's index holds, read back from the lines it points at."""
    store.refresh()
    return {store.index.read_key(i) for i in range(len(store.index.hashes))}


FP = {"model": "org/some-model", "prompt": "p", "seed": 0}


def _rec(image, crop, k, text="['a']"):
    return {"key": sample_key(image, crop, k), "image": image, "crop": crop, "sample": k, "text": text}


def test_write_read_and_reopen(tmp_path):
    store = SampleStore(tmp_path, FP)
    w = store.writer("r0")
    w.write([_rec("u1", "full", 0), _rec("u1", "full", 1, "['b', 'ü']")])
    w.close()
    again = SampleStore(tmp_path, dict(FP))
    assert again.dir == store.dir and json.loads((store.dir / "fingerprint.json").read_text()) == FP
    again.refresh()
    assert stored_keys(again) == {"u1|full|0", "u1|full|1"}
    assert again.get("u1|full|1")["text"] == "['b', 'ü']"
    assert again.get("u1|full|2") is None
    assert skip_key("u1") == "u1|skip"


def test_different_fingerprints_never_share_samples(tmp_path):
    a = SampleStore(tmp_path, FP)
    b = SampleStore(tmp_path, {**FP, "prompt": "other"})
    assert a.dir != b.dir and a.dir.name.startswith("org_some-model-")


def test_torn_last_line_is_ignored_and_later_writers_continue(tmp_path):
    store = SampleStore(tmp_path, FP)
    w = store.writer()
    w.write([_rec("u1", "full", 0), _rec("u1", "full", 1)])
    w.close()
    # Simulate a kill in the middle of writing the next record.
    with open(w.path, "a") as fh:
        fh.write(json.dumps(_rec("u1", "full", 2))[:25])
    store.refresh()
    assert stored_keys(store) == {"u1|full|0", "u1|full|1"}
    w2 = store.writer()
    w2.write([_rec("u1", "full", 2)])
    w2.close()
    store.refresh()
    assert stored_keys(store) == {"u1|full|0", "u1|full|1", "u1|full|2"}
    assert store.get("u1|full|2")["sample"] == 2


def test_a_line_with_zero_filled_bytes_is_ignored_and_regenerated_later(tmp_path):
    """After a machine crash a file system may leave a zero-filled range inside a line that ends well."""
    store = SampleStore(tmp_path, FP)
    w = store.writer("r0")
    w.write([_rec("u1", "full", 0), _rec("u1", "full", 1)])
    w.close()
    lines = w.path.read_bytes().splitlines(keepends=True)
    damaged = lines[1][:30] + b"\0" * 20 + lines[1][50:]
    w.path.write_bytes(lines[0] + damaged)
    store.refresh()
    assert store.get("u1|full|0")["sample"] == 0
    # The file's index (written when it was closed) still lists the line: it is found damaged when read,
    # quarantined, and left out from the next refresh on.
    assert store.get("u1|full|1") is None
    assert stored_keys(store) == {"u1|full|0"} and "u1|full|1" not in store
    w2 = store.writer("r0")
    w2.write([_rec("u1", "full", 1, "['redone']")])
    w2.close()
    store.refresh()
    assert store.get("u1|full|1")["text"] == "['redone']"


def test_duplicate_keys_count_once(tmp_path):
    store = SampleStore(tmp_path, FP)
    for _ in range(2):
        w = store.writer()
        w.write([_rec("u1", "full", 0)])
        w.close()
    store.refresh()
    assert len(store) == 1


@pytest.mark.slow
def test_records_survive_a_killed_writer_process(tmp_path):
    script = textwrap.dedent(f"""
        import os, signal
        from llm2labels.store import SampleStore, sample_key
        s = SampleStore({str(tmp_path)!r}, {FP!r})
        w = s.writer()
        for i in range(3):
            w.write([{{"key": sample_key("u", "full", i), "text": "x"}}])
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", script])
    assert proc.returncode == -9
    store = SampleStore(tmp_path, FP)
    store.refresh()
    assert stored_keys(store) == {"u|full|0", "u|full|1", "u|full|2"}


def test_file_hashes_are_remembered_and_follow_changes(tmp_path):
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(b"hello")
    b.write_bytes(b"hello")
    cache = tmp_path / "h" / "filehash.jsonl"
    ua, ub = FileHashes(cache).uids([a, b])
    assert ua == ub and len(ua) == 24
    assert len(cache.read_text().splitlines()) == 2
    a.write_bytes(b"hello!")
    os.utime(a, ns=(1, 1))
    (ua2,) = FileHashes(cache).uids([a])
    assert ua2 != ua
    (ub2,) = FileHashes(cache).uids([b])
    assert ub2 == ub and len(cache.read_text().splitlines()) == 3


def test_unreadable_paths_get_a_stable_id_instead_of_failing(tmp_path):
    missing = tmp_path / "gone.jpg"
    cache = tmp_path / "filehash.jsonl"
    (u1,) = FileHashes(cache).uids([missing])
    (u2,) = FileHashes(cache).uids([missing])
    assert u1 == u2 and u1.startswith("unreadable-") and not cache.exists()


def test_decode_sample_decodes_only_what_postprocessing_needs_and_falls_back(tmp_path):
    fields = ("text", "token_ends", "logprobs")
    sample = {"key": "u|full|0", "path": 'a "quoted" \\ path',
              "text": "['sky', \"it's\", 'ü \\\\ \"text\":\"x']",
              "token_ids": [1, 2], "token_ends": [5, 12, 30], "logprobs": [-0.5, float("nan"), -float("inf")]}
    odd = [
        {**sample, "key": "u|full|1", "meta": {"text": "nested"}},  # "text" twice: full decode
        {"key": "u|full|2", "logprobs": [-1.0], "token_ends": [3], "text": "['a']"},  # another key order
    ]
    store = SampleStore(tmp_path, FP)
    w = store.writer()
    w.write([sample, *odd])
    w.close()
    store.refresh()
    reader = store.reader()

    def read_sample(loc):
        return decode_sample(reader.read_lines([loc])[0], reader.files[loc[0]], loc[1])

    got = read_sample(store.locate("u|full|0"))
    assert list(got) == list(fields) and got["text"] == sample["text"]
    assert json.dumps(got) == json.dumps({f: sample[f] for f in fields})  # NaN != NaN: compare encodings
    for record in odd:  # the whole record, as `read` gives it
        got = read_sample(store.locate(record["key"]))
        assert json.dumps(got) == json.dumps(store.get(record["key"])) == json.dumps(record)
