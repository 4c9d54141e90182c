"""Layout of the sweep tables (Markdown, LaTeX booktabs) and the PR@K figure, after the paper's Tables 1-4."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from llm2labels.runfiles import read_frame

Config = tuple[str, ...]  # one value per row key, then the method name
Curve = tuple[np.ndarray, np.ndarray]  # (recall, precision) per K, fractions
Column = tuple[str, str, int]  # (header, metric column, decimals)

CLASS_NAMES = {"ade20k_150": "A-150", "ade20k_847": "A-847", "coco_panoptic": "COCO-Panoptic"}
BASELINES = {"imagenet": "ImageNet classifier", "blip2_caption": "BLIP-2 + SP", "blip2_vqa": "BLIP-2 VQA",
             "ram": "RAM++", "ram_plus": "RAM++", "tag2text": "Tag2Text"}  # proposer (or RAM variant) -> name
VOCAB: list[Column] = [("P", "seen.P", 2), ("R", "seen.R", 2), ("AUC", "seen.AUC", 2)]
# Headers and captions name {k}, {max_k} and {divisor} (what P@K divides by), filled in from the report.
LENGTHS: list[Column] = [("#L", "num_labels", 0), ("#L at K = {max_k}", "num_labels_at_max_k", 0)]
DIVISORS = {"k": "K", "min_k_len": "min(K, #L)"}  # evaluation.precision_divisor -> what P@K divides by
TABLES: list[tuple[str, str, list[Column]]] = [
    ("Table 1: ranked labels against the seen classes",
     "Vocabulary ranking against the classes present in the evaluated images: P@K and R@K at K = {k}, "
     "AUC(PR@K) for K up to {max_k}, in percent; P@K divides the hits by {divisor}.", VOCAB),
    ("Table 2: ranked labels and the size of the list",
     "As Table 1, with #L, the number of distinct labels in the ranked list, and #L at K = {max_k}, the same "
     "capped at the curve's last K (the paper's #L).", [*VOCAB, *LENGTHS]),
    ("Table 3: image level (closed set)",
     "Multi-label classification of each image over the classes: mAP over the classes present and the area "
     "under the micro precision-recall curve, in percent; labels matching no class are ignored.",
     [("mAP", "image.mAP", 2), ("AUC", "image.micro_AUC", 2)]),
    ("Table 4: false positives in the vocabulary",
     "Labels among the top {max_k} of the ranked list that match no class.", [("FP in vocab", "fp_in_vocab", 0)]),
]
FULL: list[Column] = [
    ("seen P", "seen.P", 2), ("seen P_class", "seen.P_class", 2), ("seen R", "seen.R", 2),
    ("seen AUC", "seen.AUC", 2), ("full P", "full.P", 2), ("full P_class", "full.P_class", 2),
    ("full R", "full.R", 2), ("full AUC", "full.AUC", 2), *LENGTHS, ("FP in vocab", "fp_in_vocab", 0),
    ("image mAP", "image.mAP", 2), ("image AUC", "image.micro_AUC", 2),
    ("seen classes", "seen.num_classes", 0), ("images", "images", 0), ("seconds", "seconds", 1),
]


@dataclass
class Report:
    """Everything the writers need: aggregated figures per (configuration, class list) and the job status."""

    title: str
    summary: pd.DataFrame  # one row per configuration and class list: <col>_mean, <col>_std, n
    row_keys: list[str]  # swept keys that tell configurations apart (seed and class-list keys excluded)
    classes: list[str]  # class lists present, A-150 first
    k: dict[str, int]  # P@K / R@K cut-off per class list
    failed: list[str] = field(default_factory=list)  # "job (key=value ...): reason"
    finished: int = 0
    planned: int | None = None  # from multirun.yaml, when it says
    curves: dict[str, dict[Config, Curve]] = field(default_factory=dict)  # class list -> config -> mean curve
    max_k: list[int] = field(default_factory=list)  # the curves' last K (evaluation.max_k) over the jobs
    divisors: list[str] = field(default_factory=list)  # evaluation.precision_divisor over the jobs

    def fill(self, text: str) -> str:
        """A header or caption with {k}, {max_k} and {divisor} filled in."""
        divisor = " or ".join(DIVISORS.get(d, d) for d in self.divisors or ["k"])
        if len(self.divisors) > 1:
            divisor += " (as each row's precision_divisor says)"
        max_k = " / ".join(str(m) for m in self.max_k) or "max_k"
        return text.format(k=_k_text(self), max_k=max_k, divisor=divisor)

    def status_lines(self) -> list[str]:
        found = self.finished + len(self.failed)
        lines = [f"{self.finished} of {self.planned if self.planned is not None else found} jobs finished"
                 + (f", {len(self.failed)} failed or unfinished" if self.failed else "")
                 + (f", {self.planned - found} never started" if self.planned and self.planned > found else "")]
        return lines + [f"missing: {line}" for line in self.failed]


def method_name(proposer: str, scorer: str) -> str:
    """The paper's method names: LLM2Label (occ x prob), LLM2Label_occ; baselines rank by occurrence.
    A `tiny_` stand-in is named after what it stands in for (its proposer column says tiny)."""
    baseline = BASELINES.get(proposer.removeprefix("tiny_"))
    if baseline:
        return baseline + ("" if scorer in ("occ", "") else f" ({scorer})")
    return "LLM2Label" + ("" if scorer in ("occ_prob", "") else f"_{scorer}")


def cell(mean: float, std: float, n: int, decimals: int, dash: str = "—", pm: str = "±") -> str:
    """`mean ± std`; the std is `dash` for a single seed, and a missing figure is `n/a`."""
    if n == 0 or mean is None or math.isnan(mean):
        return "n/a"
    spread = dash if n < 2 or std is None or math.isnan(std) else f"{std:.{decimals}f}"
    return f"{mean:.{decimals}f} {pm} {spread}"


def configs(report: Report) -> list[Config]:
    return list(dict.fromkeys(tuple(str(r[k]) for k in [*report.row_keys, "method"])
                              for _, r in report.summary.iterrows()))


def config_label(report: Report, config: Config) -> str:
    return " ".join([config[-1], *(f"{k}={v}" for k, v in zip(report.row_keys, config))])


def _lookup(report: Report) -> dict[tuple[Config, str], pd.Series]:
    keys = [*report.row_keys, "method"]
    return {(tuple(str(r[k]) for k in keys), r["classes"]): r for _, r in report.summary.iterrows()}


def grid(report: Report, columns: list[Column], fmt: Callable[..., str] = cell) -> list[list[str]]:
    """Rows of [method, row keys..., seeds, then per class list each column's `fmt(mean, std, n, decimals)`]."""
    rows, found = [], _lookup(report)
    for config in configs(report):
        per_list = [found.get((config, c)) for c in report.classes]
        seeds = " / ".join(dict.fromkeys(str(int(r["n"])) for r in per_list if r is not None))
        cells = [fmt(r[f"{col}_mean"], r[f"{col}_std"], int(r["n"]), d) if r is not None and f"{col}_mean" in r
                 else "n/a" for r in per_list for _, col, d in columns]
        rows.append([config[-1], *config[:-1], seeds, *cells])
    return rows


def _tex_cell(mean: float, std: float, n: int, decimals: int) -> str:
    return cell(mean, std, n, decimals, dash="--", pm="$\\pm$")


def markdown_table(report: Report, title: str, caption: str, columns: list[Column]) -> str:
    header = ["Method", *report.row_keys, "seeds",
              *(f"{report.fill(h)} ({CLASS_NAMES.get(c, c)})" for c in report.classes for h, _, _ in columns)]
    lines = [f"## {title}", "", report.fill(caption), "",
             "| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in grid(report, columns)]
    return "\n".join(lines) + "\n"


def _k_text(report: Report) -> str:
    return ", ".join(f"{report.k[c]} ({CLASS_NAMES.get(c, c)})" for c in report.classes if c in report.k)


def _tex(text: str) -> str:
    for a, b in (("\\", "\\textbackslash{}"), ("_", "\\_"), ("&", "\\&"), ("%", "\\%"), ("#", "\\#"),
                 ("±", "$\\pm$"), ("—", "--")):
        text = text.replace(a, b)
    return text


def _tex_method(name: str) -> str:
    base, sep, sub = name.partition("_")
    return f"{_tex(base)}\\textsubscript{{{_tex(sub)}}}" if name.startswith("LLM2Label_") and sep else _tex(name)


def latex_table(report: Report, title: str, caption: str, columns: list[Column]) -> str:
    lead = len(report.row_keys) + 2
    spec = "l" * lead + "".join("r" * len(columns) for _ in report.classes)
    groups = " & ".join(f"\\multicolumn{{{len(columns)}}}{{c}}{{{CLASS_NAMES.get(c, _tex(c))}}}"
                        for c in report.classes)
    rules = " ".join(f"\\cmidrule(lr){{{lead + 1 + i * len(columns)}-{lead + (i + 1) * len(columns)}}}"
                     for i in range(len(report.classes)))
    names = ["Method", *(_tex(k) for k in report.row_keys), "seeds",
             *(_tex(report.fill(h)) for _ in report.classes for h, _, _ in columns)]
    body = [" & ".join([_tex_method(r[0]), *(_tex(v) for v in r[1:lead]), *r[lead:]]) + " \\\\"
            for r in grid(report, columns, _tex_cell)]
    wide = len(spec) > 12  # the all-metrics table: scaled to the text width (graphicx)
    return "\n".join([
        "\\begin{table}[t]", "\\centering", "\\small", f"\\caption{{{_tex(title)}. "
        f"{_tex(report.fill(caption))}}}", *(["\\resizebox{\\textwidth}{!}{%"] if wide else []),
        f"\\begin{{tabular}}{{{spec}}}", "\\toprule", " & " * lead + groups + " \\\\", rules,
        " & ".join(names) + " \\\\", "\\midrule", *body, "\\bottomrule", "\\end{tabular}" + "}" * wide,
        "\\end{table}", ""])


def _present(report: Report, columns: list[Column]) -> bool:
    return any(f"{col}_mean" in report.summary and report.summary[f"{col}_mean"].notna().any()
               for _, col, _ in columns)


def _tables(report: Report) -> list[tuple[str, str, list[Column]]]:
    full = ("All metrics", "Every figure per configuration (seen: classes present in the images; full: the "
            "whole class list), mean ± std over seeds; P and P_class divide by {divisor}.", FULL)
    return [(t, c, [col for col in cols if _present(report, [col])]) for t, c, cols in [*TABLES, full]
            if _present(report, cols)]


def write_markdown(report: Report, path: Path) -> None:
    head = [f"# {report.title}", "", "Mean ± std over seeds (std with ddof=1; — for a single seed); "
            + report.fill("P@K divides the hits by {divisor}."), "",
            *(f"- {line}" for line in report.status_lines()), ""]
    path.write_text("\n".join([*head, *(markdown_table(report, *t) for t in _tables(report))]), encoding="utf-8")


def write_latex(report: Report, path: Path) -> None:
    head = [f"% {report.title}: needs \\usepackage{{booktabs,graphicx}}", *(f"% {line}" for line in report.status_lines()),
            "% " + report.fill("P@K divides the hits by {divisor}.")]
    path.write_text("\n".join([*head, *(latex_table(report, *t) for t in _tables(report))]), encoding="utf-8")


def job_curve(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A job's PR@K curve on the seen classes (the full list when no seen curve): recall, precision per K."""
    try:
        curve = read_frame(path / "pr_curve.csv")
    except (OSError, ValueError):
        curve = None
    if curve is None:
        return np.zeros(0), np.zeros(0)
    part = curve[curve["set"] == "seen"] if (curve["set"] == "seen").any() else curve[curve["set"] == "full"]
    part = part.sort_values("K")
    return part["recall"].to_numpy(float), part["precision"].to_numpy(float)


def extend_curve(recall: np.ndarray, precision: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The curve continued to n ranks: ranks past the list's end are misses (hits and recall stay, K grows)."""
    have = len(recall)
    if have >= n:
        return recall[:n], precision[:n]
    hits = precision[-1] * have if have else 0.0
    last = recall[-1] if have else 0.0
    return (np.concatenate([recall, np.full(n - have, last)]),
            np.concatenate([precision, hits / np.arange(have + 1, n + 1)]))


def mean_curves(ok: pd.DataFrame, rows: list[str], paths: dict[str, Path]) -> dict[str, dict[Config, Curve]]:
    """Class list -> configuration -> (mean recall, mean precision) per K over the configuration's seeds."""
    out: dict[str, dict[Config, Curve]] = {}
    for key, group in ok.groupby([*rows, "method", "classes"], sort=False, dropna=False):
        curves = [job_curve(paths[name]) for name in group["job"]]
        n = max(len(r) for r, _ in curves)
        if n:
            stacked = [extend_curve(r, p, n) for r, p in curves]
            mean = (np.mean([r for r, _ in stacked], axis=0), np.mean([p for _, p in stacked], axis=0))
            out.setdefault(str(key[-1]), {})[tuple(str(v) for v in key[:-1])] = mean
    return out


def _styles(report: Report, order: list[Config]) -> dict[Config, tuple[int, str]]:
    """Color index and line style per configuration: with two or more varying keys, the last one (if it has
    at most 4 values, e.g. the filter) picks the line style and the others the color."""
    varying = [i for i in range(len(order[0])) if len({c[i] for c in order}) > 1] if order else []
    last = varying[-1] if len(varying) > 1 and len({c[varying[-1]] for c in order}) <= 4 else None
    colors: dict[Config, int] = {}
    styles = {v: ("-", "--", ":", "-.")[i] for i, v in enumerate(dict.fromkeys(c[last] for c in order))} \
        if last is not None else {}
    for config in order:
        rest = tuple(v for i, v in enumerate(config) if i != last)
        colors.setdefault(rest, len(colors))
    return {c: (colors[tuple(v for i, v in enumerate(c) if i != last)], styles.get(c[last], "-")
                if last is not None else "-") for c in order}


def _legend_label(report: Report, config: Config, order: list[Config]) -> str:
    """The keys that vary, without what the method name already says (the scorer, a baseline's proposer)."""
    show_method = len({c[-1] for c in order}) > 1
    keys = [f"{k}={v}" for i, (k, v) in enumerate(zip(report.row_keys, config))
            if len({c[i] for c in order}) > 1
            and not (show_method and (k == "scorer" or (k == "proposer" and v.removeprefix("tiny_") in BASELINES)))]
    return " ".join([config[-1]] * show_method + keys) or config[-1]


def plot_sweep_curves(report: Report, path: Path) -> None:
    """One panel per class list, one mean PR@K curve per configuration, the point at K marked by a dot."""
    from matplotlib import colormaps

    from llm2labels.evaluation.plots import PRLine, panels_figure

    order = configs(report)
    looks = _styles(report, order)
    cmap = colormaps["tab10" if len({color for color, _ in looks.values()}) <= 10 else "tab20"]
    panels: dict[str, list[PRLine]] = {}
    for classes in report.classes:
        k, lines = report.k.get(classes, 0), []
        for config, (color, style) in looks.items():
            recall, precision = report.curves.get(classes, {}).get(config, (np.zeros(0), np.zeros(0)))
            point = (100 * recall[k - 1], 100 * precision[k - 1]) if 0 < k <= len(recall) else None
            lines.append(PRLine(_legend_label(report, config, order), recall, precision, point,
                                cmap(color % 20), style))
        panels[f"{CLASS_NAMES.get(classes, classes)}, seen classes (dot: K = {k})"] = lines
    n = max(1, len(panels))
    size = (5.2 * n + 0.8, 5.0 + 0.2 * len(order) / min(3, n + 1))
    panels_figure(panels, size, zoom=True, legend_below=True).savefig(path, format="png")
