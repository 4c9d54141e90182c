"""Evaluate a ranked label list against a class list: prints one JSON object (docs/method.md, "Evaluation").

    python -m llm2labels.evaluate RANKED --classes NAME [--seen SEEN.json] [--k K] [--max-k 5000] [--plot PR.png]
                                  [--precision-divisor k|min_k_len]

RANKED: a labels.csv, a vocabulary.json, or a text file with one label per line (see `read_ranked`).
NAME: a packaged class list (e.g. ade20k_150, ade20k_847) or the path of a .json/.txt class list.
SEEN.json: a JSON list of the class ids present in the evaluated images; adds the "seen" metrics.
K defaults to 150 for ade20k_150, 1000 for ade20k_847, else the number of classes.
P@K divides by K (`k`, the default) or by min(K, #L) (`min_k_len`); the report says which.
Bad input gives one line `error: ...` on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, NoReturn

from llm2labels.errors import ConfigError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One line, like every other input error of this command."""
        self.exit(2, f"error: {message} (see --help)\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m llm2labels.evaluate", description=__doc__.split("\n")[0])
    p.add_argument("ranked", help="labels.csv, vocabulary.json, or a text file with one label per line")
    p.add_argument("--classes", required=True, help="packaged class list name or path of a class list file")
    p.add_argument("--seen", help="JSON list of the class ids present in the evaluated images")
    p.add_argument("--k", type=int, help="K for P@K/R@K (default: 150 / 1000 for ADE-150/847, else #classes)")
    p.add_argument("--max-k", type=int, default=5000, help="longest K of the PR curve and of FP in vocab")
    p.add_argument("--plot", help="write the PR@K curve(s) to this PNG")
    p.add_argument("--precision-divisor", default="k", metavar="{k,min_k_len}",
                   help="what P@K and P_class@K divide by: k (default) or min_k_len, i.e. min(K, #L)")
    return p


def read_seen(path: str | Path) -> list[int]:
    """The class ids of a SEEN.json file (a JSON list of integers)."""
    try:
        data = json.loads(Path(path).expanduser().read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read seen classes {path}: {e}") from e
    except json.JSONDecodeError as e:
        raise ConfigError(f"seen classes {path} is not valid JSON: {e}") from e
    if not isinstance(data, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in data):
        raise ConfigError(f"seen classes {path}: expected a JSON list of integer class ids")
    return data


def run(argv: list[str] | None = None) -> dict[str, Any]:
    """Parse arguments, evaluate, plot if asked; returns the report (raises ConfigError on bad input)."""
    from llm2labels.evaluation.vocabulary import evaluate_with_curves, read_ranked

    args = _parser().parse_args(argv)
    seen = read_seen(args.seen) if args.seen else None
    entries = read_ranked(args.ranked)
    report, results = evaluate_with_curves(entries, args.classes, k=args.k, seen=seen, max_k=args.max_k,
                                           precision_divisor=args.precision_divisor)
    if args.plot:
        from llm2labels.evaluation.plots import plot_pr_curves

        try:
            plot_pr_curves({f"{name} ({args.classes})": r for name, r in results.items()}, args.plot,
                           k_mark=report["k"], title=Path(args.ranked).name)
        except OSError as e:
            raise ConfigError(f"cannot write plot {args.plot}: {e}") from e
    return report


def main(argv: list[str] | None = None) -> None:
    """Print the report as one JSON object; input errors become one `error:` line and exit code 2."""
    try:
        report = run(argv)
    except ConfigError as e:
        print("error: " + " ".join(str(e).split()), file=sys.stderr)
        sys.exit(2)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
