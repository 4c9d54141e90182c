"""Label normalisation: one canonical text per label, used both for ranking and for matching.

Steps (docs/method.md, "Normalisation"): lowercase; remove brackets; strip quotes, numbering/bullets and
edge punctuation; turn underscores into spaces (models writing Python lists often emit ``traffic_light``);
collapse whitespace; drop leading articles and determiners ("a car", "the sky", "some trees"); singularise
the last word with ``inflect``. What is left of a label that is only a number or a Python/JSON literal
(``1``, ``2.5``, ``None``, ``True``, ``null``) is no label: ''. The result is a fixed point:
``normalize_label(normalize_label(x)) == normalize_label(x)``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from types import ModuleType


def _import_inflect() -> ModuleType:
    """inflect without typeguard's runtime type checks.

    inflect wraps its methods in typeguard's `@typechecked`, which rewrites them at import (~1.4 s on a
    2-core machine: paid by every command) and checks argument types on every call (singular_noun is 3x
    slower with it). Only `str` is ever passed here, so inflect is imported with `typechecked` as the
    identity; its results are the same. If inflect is already imported, or typeguard is not there, it is
    used as it is.
    """
    import sys

    if "inflect" in sys.modules:
        return sys.modules["inflect"]
    try:
        import typeguard
    except ImportError:
        import inflect

        return inflect
    checked = typeguard.typechecked

    def identity(target: Callable | None = None, **_kwargs: object) -> Callable:
        return target if target is not None else (lambda function: function)  # @typechecked(...) too

    typeguard.typechecked = identity
    try:
        import inflect
    finally:
        typeguard.typechecked = checked
    return inflect


_ENGINE = _import_inflect().engine()

# Brackets never carry label meaning ("[\"sky\"]", "sky (blue)"): replaced by a space, wherever they are
# (after numbering is stripped, so that "2) cars" loses its ")" as numbering, not as a bracket).
_BRACKETS = re.compile(r"[\[\](){}<>]")
# "1. sky", "2) sky", "3.sky" (a digit after the dot is a decimal: "3.5 inch floppy" is kept).
_NUMBERING = re.compile(r"^\d{1,3}[.):]+(?=\s|[^\W\d_]|$)")
_QUOTES = "'\"`‘’“”«»"
_LEADING = _QUOTES + "([{<-–—*•·.,;:!?/\\|#>=~ "
_TRAILING = _QUOTES + ")]}>.,;:!?…*/\\|~-– "
# Only plain words (letters, hyphen-joined: "t-shirts") go to inflect; "3d", "people's" and "x2" do not.
_WORD = re.compile(r"[^\W\d_]+(?:-[^\W\d_]+)*")
# Leading words that only say which or how many: dropped, repeatedly ("the some trees" -> "trees").
_DETERMINERS = frozenset("a an the some several many various multiple these those this that another".split())
# Whole labels that are a value, not a thing: numbers ("1", "-2.5", "1,000", "1e3") and literals.
_NUMBER = re.compile(r"[+-]?(?:\d+(?:,\d{3})*(?:\.\d*)?|\.\d+)(?:e[+-]?\d+)?")
_LITERALS = frozenset({"none", "true", "false", "null"})

# Where inflect's singular_noun is wrong for words that occur as labels. Each entry was checked against
# inflect 7 (tests/test_normalize.py re-checks that inflect still gets it wrong, so stale entries show up).
# Words whose singular inflect gets right ("species", "series", "news", "scissors", "trousers", "pliers",
# "pajamas", "chassis", "debris", "grass", "glass", "dress", "shelves"->"shelf", "stairs"->"stair",
# "leaves"->"leaf") are deliberately absent.
_SINGULAR_NOUNS_IN_S = (
    # Singular nouns ending in -s that inflect truncates ("bus" -> "bu"), which breaks "buses" == "bus".
    "bus minibus autobus motorbus omnibus trolleybus gas canvas lens iris cactus octopus walrus hippopotamus "
    "rhinoceros platypus asparagus hummus humus lotus campus circus virus atlas stylus tennis trellis dais "
    "hibiscus crocus citrus eucalyptus abacus fungus mantis ibis pelvis axis bonus census chaos cosmos"
)
_PLURALIA_TANTUM = (
    # Plural-only nouns whose stripped form is another word ("pants" -> "pant", "shorts" -> "short").
    "clothes bedclothes nightclothes pants underpants sweatpants jeans shorts tights overalls sunglasses "
    "eyeglasses spectacles goggles binoculars tongs grits physics electronics gymnastics athletics"
)
_NOT_NOUNS = (
    # Function words that end sentence-like labels ("the sky is" -> "the sky i" otherwise).
    "is was has does this his its hers yes us as always perhaps"
)
_SINGULAR_OVERRIDES: dict[str, str] = {
    **{w: w for w in " ".join((_SINGULAR_NOUNS_IN_S, _PLURALIA_TANTUM, _NOT_NOUNS)).split()},
    "eaves": "eave",  # inflect: "eaf"
    "cacti": "cactus",  # inflect: already singular
    "fungi": "fungus",
}
# "glasses" alone is eyewear (ADE-847 "spectacles, eyeglasses, glasses"); "wine glasses" and "drinking glasses"
# are containers and may singularise. So "glasses" is kept only when it is the whole label.
_WHOLE_LABEL_KEEP = frozenset({"glasses"})
# "people" -> "person" (inflect's answer) is kept on purpose: it merges with the person class, which is what
# a VLM means by "people" in a segmentation label.


def _clean(text: str) -> str:
    """Everything but singularisation, repeated until nothing changes (so the result is a fixed point)."""
    previous = None
    while text != previous:
        previous = text
        text = " ".join(text.replace("_", " ").split()).lstrip(_LEADING).rstrip(_TRAILING)
        text = " ".join(_BRACKETS.sub(" ", _NUMBERING.sub("", text)).split())
        first, _, rest = text.partition(" ")
        if first in _DETERMINERS:
            text = rest
    if _NUMBER.fullmatch(text) or text in _LITERALS:
        return ""
    return text


def _override(word: str) -> str | None:
    """The listed singular of a word (or of the last part of a hyphenated word), None when not listed."""
    head, sep, tail = word.rpartition("-")
    if tail in _SINGULAR_OVERRIDES:
        return head + sep + _SINGULAR_OVERRIDES[tail]
    return _SINGULAR_OVERRIDES.get(word)


def _singular(word: str) -> str:
    """inflect's singular of a plain word, or the word itself when inflect is wrong or unsure.

    A result is accepted only if inflect considers it singular in turn and cleaning leaves it alone, which
    keeps normalisation idempotent ("s" -> "" and "'s" -> "'" are refused).
    """
    listed = _override(word)
    if listed is not None:
        return listed
    if not _WORD.fullmatch(word):
        return word
    result = _ENGINE.singular_noun(word)
    if not result or result == word or not _WORD.fullmatch(result) or _clean(result) != result:
        return word
    listed = _override(result)
    if listed is not None:
        return listed
    return result if _ENGINE.singular_noun(result) in (False, result) else word


@functools.lru_cache(maxsize=1 << 18)
def normalize_label(text: str) -> str:
    """The canonical form of a label; '' when nothing is left (an empty or punctuation-only label)."""
    cleaned = _clean(text.lower())
    if not cleaned or cleaned in _WHOLE_LABEL_KEEP:
        return cleaned
    head, sep, last = cleaned.rpartition(" ")
    return head + sep + _singular(last)
