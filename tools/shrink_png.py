"""Make a PNG small enough to commit: quantise it to a 256-colour palette, in place.

    python tools/shrink_png.py docs/screenshot.png [--max-kb 300]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image


def shrink(path: Path, max_kb: int = 300) -> int:
    """Quantise ``path`` to a palette PNG; returns its new size in bytes (fails above max_kb)."""
    image = Image.open(path).convert("RGB")
    image.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
        path, format="PNG", optimize=True
    )
    size = path.stat().st_size
    if size > max_kb * 1024:
        raise SystemExit(f"{path}: {size / 1024:.0f} kB after quantising, more than {max_kb} kB")
    return size


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("png", type=Path)
    parser.add_argument("--max-kb", type=int, default=300)
    args = parser.parse_args()
    print(f"{args.png}: {shrink(args.png, args.max_kb) / 1024:.0f} kB")
