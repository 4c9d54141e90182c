"""Group a ranked label list into a vocabulary (Stage 2) outside a run.

    python -m llm2labels.group LABELS [--grouper hybrid|wordnet|embedding|llm|openai|none] [-o OUT] [--threshold T]
                                      [key=value ...]

LABELS is a run's labels.csv (columns rank, label, score, occ, prob, images[, surface_forms]; rows are taken
in rank order) or a plain text file with one label per line (then rank = line order, score = 1/rank and
occ = prob = images = 0). Blank lines are skipped and a label given twice keeps its first (best) row.
The grouper comes from `conf/grouper/<name>.yaml`, composed as run.py composes it, so both share defaults;
`key=value` arguments override its keys (`model=...`, `base_url=...`), and `--threshold T` sets its `threshold`.
Without -o the vocabulary JSON goes to stdout; with -o OUT (a directory) vocabulary.json and every export
(`grouping/exports.py`) are written there. Errors a user can cause print one line `error: ...` and exit 2.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any, NoReturn

from llm2labels.errors import ConfigError
from llm2labels.runfiles import read_ranked_labels

# The Hydra config root run.py uses (the repository's conf/ is a link to it): inside the package, so an
# installed wheel finds it too.
CONF_DIR = Path(__file__).resolve().parent / "conf"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line instead of usage + message
        self.exit(2, f"error: {message} (see --help)\n")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = _Parser(prog="python -m llm2labels.group", description=__doc__.splitlines()[0])
    parser.add_argument("labels", type=Path, help="a run's labels.csv, or a text file with one label per line")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="override keys of the grouper config")
    parser.add_argument("--grouper", default="hybrid", help="a config in conf/grouper (default: hybrid)")
    parser.add_argument("-o", "--out", type=Path, help="directory for vocabulary.json and the exports")
    parser.add_argument("--threshold", type=float, help="the grouper's threshold (hybrid, embedding: minimum cosine)")
    parser.add_argument("--conf-dir", type=Path, default=CONF_DIR, help=f"Hydra config root holding grouper/*.yaml (default: {CONF_DIR})")
    return parser.parse_intermixed_args(argv)  # key=value overrides may follow options


def build_grouper(name: str, conf_dir: Path, overrides: list[str], threshold: float | None) -> Any:
    """Compose the run config with `grouper=<name>` (as run.py does, so defaults lists and interpolations in
    the grouper files work) and instantiate its grouper; `key=value` overrides go to the grouper's keys.
    Clears a Hydra global state already initialised in this process (this is an entry point)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.utils import instantiate

    options = sorted(p.stem for p in (conf_dir / "grouper").glob("*.yaml"))
    if name not in options:
        raise ConfigError(f"no grouper config {conf_dir / 'grouper' / name}.yaml: give --grouper one of "
                          f"[{', '.join(options) or 'none found'}]")
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise ConfigError(f"expected key=value after LABELS, got {bad[0]!r}")
    prefixed = [re.sub(r"^([+~]*)", r"\1grouper.", o) for o in overrides]  # "+key=v" -> "+grouper.key=v"
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir.resolve()), version_base="1.3"):
        cfg = compose("config", overrides=[f"grouper={name}", *prefixed])
    if threshold is not None:
        if "threshold" not in cfg.grouper:
            raise ConfigError(f"--threshold: grouper {name} has no threshold setting (the embedding grouper has)")
        cfg.grouper.threshold = threshold
    return instantiate(cfg.grouper)


def _one_line(err: BaseException) -> str | None:
    """The one-line message of an error the user caused (bad config, missing file or model), else None."""
    from hydra.errors import HydraException

    from llm2labels.cli import user_error

    message = user_error(err)
    if message is None and isinstance(err, HydraException):  # a bad override, a _target_ that does not import
        message = " ".join(str(err).split())
    return message


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        ranked = read_ranked_labels(args.labels)
        grouper = build_grouper(args.grouper, args.conf_dir, args.overrides, args.threshold)
        vocab = grouper(ranked)
        if args.out is None:
            sys.stdout.write(json.dumps(vocab, indent=1, ensure_ascii=False, default=str) + "\n")
        else:
            from llm2labels.grouping.exports import write_all

            try:
                written = write_all(vocab, args.out)
            except OSError as e:
                raise ConfigError(f"cannot write the vocabulary to {args.out}: {e}") from e
            print(f"{len(vocab['synsets'])} synsets from {len(ranked)} labels: "
                  f"{', '.join(str(p) for p in written.values())}", file=sys.stderr)
    except Exception as err:  # user errors become one line; anything else keeps its traceback
        message = _one_line(err)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
