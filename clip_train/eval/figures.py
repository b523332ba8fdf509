"""Dashboard figures of a validation batch, drawn with PIL: the similarity heatmap and retrieval examples.

Both take N thumbnails (PIL images), their N captions and the (N, N) cosine similarity
`similarity[i, j]` of caption i and image j, so row i's diagonal cell is the true pair.
"""

from collections.abc import Sequence

import torch
from PIL import Image, ImageDraw, ImageFont

CELL = 56  # pixels per heatmap cell and thumbnail
CAPTION_WIDTH = 300
FONT = ImageFont.load_default()
# a dark-blue → teal → yellow ramp (perceptually ordered, like viridis), interpolated linearly
_RAMP = ((68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37))


def _colour(value: float) -> tuple[int, int, int]:
    """`value` in [0, 1] -> an RGB colour on the ramp."""
    position = min(max(value, 0.0), 1.0) * (len(_RAMP) - 1)
    low = min(int(position), len(_RAMP) - 2)
    t = position - low
    return tuple(round(a + (b - a) * t) for a, b in zip(_RAMP[low], _RAMP[low + 1]))


def _fit(text: str, width: int) -> str:
    """`text` cut with an ellipsis to fit `width` pixels in the default font."""
    if FONT.getlength(text) <= width:
        return text
    while text and FONT.getlength(text + "…") > width:
        text = text[:-1]
    return text + "…"


def thumbnails(pixels: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> list[Image.Image]:
    """(N, 3, H, W) normalised images -> N RGB thumbnails of CELL × CELL pixels."""
    mean_t, std_t = torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1)
    images = ((pixels.detach().float().cpu() * std_t + mean_t).clamp(0, 1) * 255).round().byte()
    return [Image.fromarray(image.permute(1, 2, 0).numpy()).resize((CELL, CELL)) for image in images]


def similarity_heatmap(images: Sequence[Image.Image], captions: Sequence[str], similarity: torch.Tensor) -> Image.Image:
    """Captions down the left, images across the top, each cell coloured and labelled by its cosine.

    Colours span the figure's own min..max, so the diagonal (true pairs) stands out even early in training.
    """
    n = len(images)
    low, high = float(similarity.min()), float(similarity.max())
    canvas = Image.new("RGB", (CAPTION_WIDTH + n * CELL, CELL + n * CELL), "white")
    draw = ImageDraw.Draw(canvas)
    for j, image in enumerate(images):
        canvas.paste(image, (CAPTION_WIDTH + j * CELL, 0))
    for i, caption in enumerate(captions):
        top = CELL + i * CELL
        draw.text((4, top + CELL // 2 - 6), _fit(caption, CAPTION_WIDTH - 8), fill="black", font=FONT)
        for j in range(n):
            value = float(similarity[i, j])
            left = CAPTION_WIDTH + j * CELL
            shade = (value - low) / (high - low) if high > low else 0.5
            draw.rectangle([left, top, left + CELL - 1, top + CELL - 1], fill=_colour(shade))
            ink = "black" if shade > 0.6 else "white"
            draw.text((left + 12, top + CELL // 2 - 6), f"{value:.2f}", fill=ink, font=FONT)
        draw.rectangle([CAPTION_WIDTH + i * CELL, top, CAPTION_WIDTH + (i + 1) * CELL - 1, top + CELL - 1], outline="red")
    return canvas


def retrieval_examples(
    images: Sequence[Image.Image], captions: Sequence[str], similarity: torch.Tensor, queries: int = 4, k: int = 4
) -> Image.Image:
    """For the first `queries` captions: the caption, then its top-k images with their cosine.

    The true image is framed in green, others in grey.
    """
    queries, k = min(queries, len(captions)), min(k, len(images))
    row_height = CELL + 16
    canvas = Image.new("RGB", (CAPTION_WIDTH + k * (CELL + 8), queries * row_height), "white")
    draw = ImageDraw.Draw(canvas)
    for i in range(queries):
        top = i * row_height
        draw.text((4, top + CELL // 2 - 6), _fit(captions[i], CAPTION_WIDTH - 8), fill="black", font=FONT)
        scores, order = similarity[i].topk(k)
        for rank, (score, j) in enumerate(zip(scores.tolist(), order.tolist())):
            left = CAPTION_WIDTH + rank * (CELL + 8)
            canvas.paste(images[j], (left, top))
            frame = "green" if j == i else "gray"
            draw.rectangle([left - 2, top - 1, left + CELL + 1, top + CELL], outline=frame, width=2)
            draw.text((left + 8, top + CELL + 2), f"{score:.2f}", fill="black", font=FONT)
    return canvas
