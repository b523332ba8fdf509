"""The curation report: report.json, report.md and score_histogram.png in the output folder.

report.json holds `counts` (pairs at each stage: scored, after_score_filter, after_dedup, after_balance, written),
`bad_samples` ({kind: count} of what could not be scored), `units`, `scores` (min, mean, max of all scored) and,
when balancing ran, `entries` ({entry: {"before": matches among the pairs balanced, "after": among those kept}}).
"""

import json
import os

import torch
from PIL import Image, ImageDraw

HISTOGRAM_BINS = 40


def score_histogram(scores: torch.Tensor, kept: torch.Tensor, path: str, width: int = 640, height: int = 320) -> None:
    """A PNG bar chart of `scores` (N,) in grey, with the kept ones (a bool mask (N,)) in blue over them."""
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    low, high = (float(scores.min()), float(scores.max())) if len(scores) else (0.0, 1.0)
    high = high if high > low else low + 1e-6
    margin, plot_height = 40, height - 80
    all_counts = torch.histc(scores.float(), HISTOGRAM_BINS, low, high)
    kept_counts = torch.histc(scores[kept].float(), HISTOGRAM_BINS, low, high)
    tallest = max(float(all_counts.max()) if len(scores) else 1.0, 1.0)
    bar = (width - 2 * margin) / HISTOGRAM_BINS
    for b in range(HISTOGRAM_BINS):
        x = margin + b * bar
        for counts, colour in ((all_counts, (180, 180, 180)), (kept_counts, (40, 90, 200))):
            top = height - margin - plot_height * float(counts[b]) / tallest
            draw.rectangle([x, top, x + bar - 1, height - margin], fill=colour)
    draw.line([margin, height - margin, width - margin, height - margin], fill="black")
    draw.text((margin, height - margin + 8), f"{low:.3f}", fill="black")
    draw.text((width - margin - 40, height - margin + 8), f"{high:.3f}", fill="black")
    draw.text(
        (margin, 10),
        f"CLIP score of {len(scores)} pairs (grey), {int(kept.sum())} kept (blue); tallest bar {int(tallest)}",
        fill="black",
    )
    image.save(path)


def write_report(out: str, report: dict) -> None:
    """report.json and a Markdown summary, report.md, under `out`."""
    with open(os.path.join(out, "report.json"), "w") as f:
        json.dump(report, f, indent=2)
    lines = ["# Curation report", "", "| stage | pairs |", "|---|---:|"]
    lines += [f"| {stage} | {count} |" for stage, count in report["counts"].items()]
    bad = {kind: n for kind, n in report["bad_samples"].items() if n}
    lines += [
        "",
        f"Bad samples skipped: {sum(bad.values())}" + (f" ({', '.join(f'{k} {n}' for k, n in bad.items())})" if bad else ""),
    ]
    scores = report["scores"]
    lines += [
        "",
        f"CLIP score: min {scores['min']:.4f}, mean {scores['mean']:.4f}, max {scores['max']:.4f} (score_histogram.png)",
    ]
    if report.get("entries"):
        lines += ["", "| entry | before balancing | after |", "|---|---:|---:|"]
        lines += [f"| {entry} | {n['before']} | {n['after']} |" for entry, n in report["entries"].items()]
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
