"""A PNG bar chart of the medians, drawn with pillow (no plotting library needed).

One block per task and dataset, one bar per contender: median time on the left, peak
memory above imports on the right. Each block has its own scale, because the tasks differ
by orders of magnitude; the numbers are written beside the bars.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

COLOURS = {
    "dicomarray": (31, 119, 180),
    "simpleitk": (255, 127, 14),
    "pydicom": (44, 160, 44),
    "dicom-numpy": (148, 103, 189),
    "floor": (127, 127, 127),
}
WIDTH = 1400
LABEL_WIDTH = 300
PANEL_WIDTH = 500
BAR = 16
GAP = 4
BLOCK_GAP = 14
HEADER = 100
PANELS = (
    ("seconds", "median time, s", "{:.3g} s"),
    ("peak_above_mb", "peak MB above imports", "{:.0f} MB"),
)


def draw_chart(results: dict[str, Any], path: Path) -> None:
    """Draw the summary of ``results`` into the PNG ``path``."""
    rows = [r for r in results["summary"] if "seconds" in r]
    blocks = _blocks(rows)
    height = HEADER + sum((len(b) + 1) * (BAR + GAP) + BLOCK_GAP for b in blocks.values()) + 20
    image = Image.new("RGB", (WIDTH, max(height, HEADER + 40)), "white")
    draw = ImageDraw.Draw(image)
    font = _font(13)
    _header(draw, results, _font(16), font)
    y = HEADER
    for (task, dataset), block in blocks.items():
        label = f"{task} | {results['datasets'].get(dataset, '-')}"
        draw.text((10, y), label, fill="black", font=font)
        y += BAR + GAP
        for panel, (metric, _, fmt) in enumerate(PANELS):
            _bars(draw, block, metric, fmt, LABEL_WIDTH + panel * (PANEL_WIDTH + 40), y, font)
        for i, row in enumerate(block):
            draw.text((30, y + i * (BAR + GAP)), row["contender"], fill="black", font=font)
        y += len(block) * (BAR + GAP) + BLOCK_GAP
    image.save(path)


def _blocks(rows: list[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    blocks: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        blocks.setdefault((row["task"], row["dataset"]), []).append(row)
    return blocks


def _bars(draw: ImageDraw.ImageDraw, block: list, metric: str, fmt: str, x: int, y: int, font):
    """One panel of a block: bars scaled to the block's largest value."""
    largest = max((max(r[metric], 0.0) for r in block), default=0.0) or 1.0
    for i, row in enumerate(block):
        value = max(row[metric], 0.0)
        top = y + i * (BAR + GAP)
        length = int((PANEL_WIDTH - 90) * value / largest)
        colour = COLOURS.get(row["contender"], (0, 0, 0))
        draw.rectangle((x, top, x + max(length, 1), top + BAR), fill=colour)
        draw.text((x + length + 6, top + 1), fmt.format(value), fill="black", font=font)


def _header(draw: ImageDraw.ImageDraw, results: dict[str, Any], big, font) -> None:
    machine = results["machine"]
    title = "dicomarray benchmarks" + (
        " (quick run: tiny data)" if results["options"]["quick"] else ""
    )
    draw.text((10, 8), title, fill="black", font=big)
    draw.text(
        (10, 32),
        f"{machine['date']} | {machine['cpu']} | {machine['cores']} cores | "
        f"{machine['memory_gib']} GiB | Python {machine['python']} | medians of "
        f"{results['options']['rounds']} rounds, warm cache",
        fill="black",
        font=font,
    )
    for panel, (_, title, _) in enumerate(PANELS):
        draw.text((LABEL_WIDTH + panel * (PANEL_WIDTH + 40), 74), title, fill="black", font=big)
    x = 10
    for name, colour in COLOURS.items():
        draw.rectangle((x, 54, x + 12, 66), fill=colour)
        draw.text((x + 16, 52), name, fill="black", font=font)
        x += 16 + int(draw.textlength(name, font=font)) + 14


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # pillow < 10.1 has one bitmap size only
        return ImageFont.load_default()
