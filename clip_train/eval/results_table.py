"""One table for several checkpoints: a row per task metric, a column per checkpoint, as Markdown, CSV and a bar plot.

`python -m clip_train.evaluate checkpoint=[A,B]` writes `results.md`, `results.csv` and `results.png` beside
`metrics.json`. With a benchmark suite the rows are the suite's own scores (`<suite>/<task>` and
`<suite>/average`), followed by the other tasks' headline metrics; without one, every task's headline
metrics. Ranks, alignment gaps, losses and per-class breakdowns stay in `metrics.json`.
"""

import csv
import os
from collections.abc import Mapping, Sequence

from PIL import Image, ImageDraw, ImageFont

NOT_HEADLINES = ("_rank", "alignment_gap", "/loss", "per_class", "top5")
COLOURS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75))


def column_labels(checkpoints: Sequence[str]) -> list[str]:
    """Each checkpoint's shortest trailing path that no other one shares (`run_a/last.ckpt`, `run_b/last.ckpt`)."""
    parts = [os.path.normpath(path).split(os.sep) for path in checkpoints]
    for depth in range(1, max(len(p) for p in parts) + 1):
        labels = ["/".join(p[-depth:]) for p in parts]
        if len(set(labels)) == len(labels):
            return labels
    return [str(path) for path in checkpoints]


def table_rows(results: Mapping[str, Mapping], suite_rows: Sequence[str] = ()) -> list[str]:
    """The metric names shown: `suite_rows` first, then every other float metric that is a headline, excluding
    the per-task metrics a suite already summarises (`benchmark/...`) when it has rows."""
    names = sorted({name for metrics in results.values() for name, value in metrics.items() if isinstance(value, float)})
    others = [
        name for name in names
        if name not in suite_rows and not any(part in name for part in NOT_HEADLINES)
        and not (suite_rows and name.startswith("benchmark/"))
    ]  # fmt: skip
    return [*suite_rows, *others]


def write_results_table(results: Mapping[str, Mapping], folder: str, suite_rows: Sequence[str] = ()) -> list[str]:
    """Write results.md, results.csv and results.png into `folder` for {column label: metrics}; returns the rows."""
    labels, rows = list(results), table_rows(results, suite_rows)

    def cell(label: str, row: str) -> str:
        value = results[label].get(row)
        return "" if value is None else f"{value:.4f}"

    with open(os.path.join(folder, "results.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["metric", *labels])
        writer.writerows([row, *(cell(label, row) for label in labels)] for row in rows)
    lines = ["| metric | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(labels)]
    lines += [f"| {row} | " + " | ".join(cell(label, row) for label in labels) + " |" for row in rows]
    with open(os.path.join(folder, "results.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    bar_plot(results, rows, os.path.join(folder, "results.png"))
    return rows


def bar_plot(results: Mapping[str, Mapping], rows: Sequence[str], path: str, bar: int = 12, width: int = 360) -> None:
    """Horizontal grouped bars: per row, one bar per checkpoint, its length the value on [0, 1] (clipped)."""
    font = ImageFont.load_default()
    labels = list(results)
    text_width = 8 + max((int(font.getlength(text)) for text in (*rows, *labels)), default=0)
    group = bar * len(labels) + 8
    image = Image.new("RGB", (text_width + width + 60, 16 + group * len(rows) + 16 * len(labels) + 8), "white")
    draw = ImageDraw.Draw(image)
    for r, row in enumerate(rows):
        top = 8 + r * group
        draw.text((4, top), row, fill="black", font=font)
        for c, label in enumerate(labels):
            value = results[label].get(row)
            if value is None:
                continue
            y = top + c * bar
            length = int(width * min(max(value, 0.0), 1.0))
            draw.rectangle((text_width, y, text_width + length, y + bar - 2), fill=COLOURS[c % len(COLOURS)])
            draw.text((text_width + length + 4, y), f"{value:.3f}", fill="black", font=font)
    legend = 8 + group * len(rows) + 8
    for c, label in enumerate(labels):
        draw.rectangle((4, legend + 16 * c, 14, legend + 16 * c + 10), fill=COLOURS[c % len(COLOURS)])
        draw.text((20, legend + 16 * c), label, fill="black", font=font)
    image.save(path)
