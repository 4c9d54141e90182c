"""What a stored record is: its key, what makes a sample record well-formed, and the store's fixed names."""

from __future__ import annotations

import functools
import hashlib
import json
from json.decoder import scanstring
from typing import Any

import numpy as np

DAMAGED = "damaged.jsonl"  # lines of sample files found damaged, left out of the index
KEY_PREFIX = b'{"key":"'  # every record's line starts so: readers find keys without parsing the JSON


def line_key(line: bytes) -> str | None:
    """The key a record line starts with, or None when it does not start like a record. Keys are read
    without parsing the rest of the line; one written with JSON escapes is unescaped."""
    if not line.startswith(KEY_PREFIX):
        return None
    start = len(KEY_PREFIX)
    end = line.find(b'"', start)
    if end < 0:
        return None
    raw = line[start:end]
    if b"\\" not in raw:
        return raw.decode("utf-8", "replace")
    try:
        return scanstring(line.decode("utf-8", "replace"), start)[0]
    except ValueError:
        return None


def sample_key(image: str, crop: str, sample: int) -> str:
    return f"{image}|{crop}|{sample}"


def skip_key(image: str, max_pixels: int | None = None) -> str:
    """The key of an unusable file's record: a fact about the file, or (with `max_pixels`) a skip that
    holds only under that pixel limit."""
    return f"{image}|skip" if max_pixels is None else f"{image}|skip|max_pixels={max_pixels}"


class DamagedRecord(ValueError):
    """A stored line that is complete but not a well-formed sample (a flipped byte, a cut, a wrong type)."""


def fingerprint_digest(fingerprint: dict[str, Any]) -> str:
    text = json.dumps(fingerprint, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def sample_problem(sample: Any) -> str | None:
    """Why `sample` is not a usable sample record, or None: text a string; token_ends increasing integers
    and logprobs numbers, one per token."""
    if not isinstance(sample, dict):
        return "not a JSON object"
    text, ends, logprobs = sample.get("text"), sample.get("token_ends"), sample.get("logprobs")
    if not isinstance(text, str):
        return "text is not a string"
    if not (isinstance(ends, list) and isinstance(logprobs, list)) or len(ends) != len(logprobs):
        return "token_ends and logprobs are not two lists of one length"
    if not all(type(e) is int for e in ends) or any(b < a for a, b in zip(ends, ends[1:])):
        return "token_ends are not increasing integers"
    if not all(type(x) is float or type(x) is int for x in logprobs):
        return "logprobs are not numbers"
    return None


# --- Key hashes --------------------------------------------------------------------------------------------
# A key "<uid>|<rest>" hashes to 64 bits as mix64(uid_bits(uid) ^ rest_bits(rest)) (mix64: splitmix64's
# finaliser). A hex uid (file_uid: itself a hash of the file's bytes) is read 16 hex digits at a time,
# h = mix64(h ^ digits) from h = its length, which numpy does for a whole block of uids at once
# (`uid_bits_array`); any other uid is hashed with blake2b. The rest ("full|3", "skip") is hashed once per
# distinct value. So the hashes of a whole dataset's keys are a few numpy operations. The index holds only
# these hashes; a hash shared by two stored lines is resolved by their key strings (`index.StoreIndex`),
# and a reader checks the key of every line it reads, so a collision is never taken for a hit.
_MASK64 = (1 << 64) - 1
KEY_HASH_MASK = _MASK64  # tests narrow it to force collisions
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")
_MAX_HEX = 64  # longer hex uids take the blake2b path
_HEX_VALUE = np.full(256, 255, np.uint8)  # ASCII byte -> hex digit value (255: not a hex digit)
for _c in "0123456789abcdef":
    _HEX_VALUE[ord(_c)] = _HEX_VALUE[ord(_c.upper())] = int(_c, 16)


def _mix_int(x: int) -> int:
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def _mix_array(x: np.ndarray) -> np.ndarray:
    """`_mix_int` on a uint64 array (multiplies wrap modulo 2^64)."""
    x = x.copy()
    with np.errstate(over="ignore"):
        x ^= x >> np.uint64(30)
        x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(27)
        x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    return x


def _is_hex(uid: str) -> bool:
    return 0 < len(uid) <= _MAX_HEX and _HEX_DIGITS.issuperset(uid)


def _blake64(text: str, salt: int) -> int:
    person = salt.to_bytes(8, "little") if salt else b""
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8, person=person).digest()
    return int.from_bytes(digest, "little")


def uid_bits(uid: str, salt: int = 0) -> int:
    """64 bits of an image uid (see above); another `salt` gives independent bits (`key_check`)."""
    if _is_hex(uid):
        h = len(uid) ^ salt  # so that "1" and "0001" differ
        for i in range(0, len(uid), 16):
            h = _mix_int(h ^ int(uid[i:i + 16], 16))
        return h
    return _blake64(uid, salt)


def uid_bits_array(uids: list[str], salt: int = 0) -> np.ndarray:
    """`uid_bits` of each uid, as uint64: vectorised when the uids are hex strings of one length."""
    n = len(uids)
    length = len(uids[0]) if n else 0
    if n and 0 < length <= _MAX_HEX and all(len(u) == length for u in uids):
        try:
            raw = "".join(uids).encode("ascii")
        except UnicodeEncodeError:
            raw = b""
        if len(raw) == n * length:  # every character one byte
            digits = _HEX_VALUE[np.frombuffer(raw, np.uint8)].reshape(n, length)
            if not (digits == 255).any():
                h = np.full(n, length ^ salt, np.uint64)
                for i in range(0, length, 16):
                    part = digits[:, i:i + 16].astype(np.uint64)
                    value = np.zeros(n, np.uint64)
                    for j in range(part.shape[1]):
                        value = (value << np.uint64(4)) | part[:, j]
                    h = _mix_array(h ^ value)
                return h
    return np.fromiter((uid_bits(u, salt) for u in uids), np.uint64, n)


@functools.lru_cache(maxsize=4096)
def rest_bits(rest: str, salt: int = 0) -> int:
    """64 bits of the part of a key after the uid ("full|3")."""
    return _blake64(rest, salt)


def key_hashes(uids: np.ndarray, rests: np.ndarray) -> np.ndarray:
    """Hashes of every (uid, rest) pair: `uids` (n,) and `rests` (m,) of uid_bits / rest_bits -> (n, m)."""
    mixed = _mix_array(uids.astype(np.uint64)[:, None] ^ rests.astype(np.uint64)[None, :])
    return mixed & np.uint64(KEY_HASH_MASK)


def _key_bits(key: str, salt: int) -> int:
    uid, _, rest = key.partition("|")
    return _mix_int(uid_bits(uid, salt) ^ rest_bits(rest, salt))


def key_hash(key: str) -> int:
    """The hash of one key string (`key_hashes` for one pair, in plain Python: a writer calls it per record)."""
    return _key_bits(key, 0) & KEY_HASH_MASK


CHECK_SALT = 0x9E3779B97F4A7C15


def key_check(key: str) -> int:
    """A second 64-bit hash of a key, independent of `key_hash`: kept beside parsed records, so that a record
    found by its key hash is known to hold the key asked for without reading its line."""
    return _key_bits(key, CHECK_SALT)


def key_checks(uids: list[str], rests: list[str]) -> np.ndarray:
    """`key_check` of every (uid, rest) pair, (len(uids), len(rests))."""
    rest_checks = np.array([rest_bits(r, CHECK_SALT) for r in rests], np.uint64)
    return _mix_array(uid_bits_array(uids, CHECK_SALT)[:, None] ^ rest_checks[None, :])
