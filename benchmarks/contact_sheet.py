"""A contact sheet for looking at colorizations: one row per photo, grey input | ours | original.

  python benchmarks/contact_sheet.py ../shared/data/val -o out/sheet.jpg --limit 12
  python benchmarks/contact_sheet.py photos/ -o out/sheet.jpg --decode distribution --temperature 0.38 \\
      --detector ../shared/models/yolox_nano_coco_416.onnx

Works for any folder of photos (its images sorted by name; --limit N takes the first N, --every K every
K-th). "grey" is the photo's own lightness (ab = 0, composed like the output), "ours" the colorizer's
output at full resolution, "original" the photo. Each picture is scaled to --height pixels.

Sheets made from the data set's photos are derived pictures: write them under out/ (ignored by git)
and do not commit them.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _vivid_common as common  # noqa: E402

GUTTER = 4
HEADER = 22
COLUMNS = ("grey", "ours", "original")


def grey_of(rgb: np.ndarray, ops) -> np.ndarray:
    """The photo with ab = 0 at full resolution (its own lightness), composed like the output."""
    ab = np.zeros((2, 8, 8), np.float32)
    if ops is not None:
        return ops.compose(rgb, ab)
    from instcolor.compose import compose_reference

    return compose_reference(rgb, ab)


def _fit(rgb: np.ndarray, height: int):
    from PIL import Image

    h, w = rgb.shape[:2]
    width = max(1, round(w * height / h))
    return Image.fromarray(rgb).resize((width, height), Image.LANCZOS)


def build_sheet(rows: list[tuple[np.ndarray, np.ndarray, np.ndarray]], height: int, title: str = ""):
    """rows of (grey, ours, original) (H, W, 3) uint8 -> a PIL RGB image: the three pictures of a row
    side by side at ``height`` pixels, rows stacked, a header naming the columns."""
    from PIL import Image, ImageDraw

    fitted = [[_fit(im, height) for im in row] for row in rows]
    col_w = [max(r[c].width for r in fitted) for c in range(3)]
    width = sum(col_w) + GUTTER * 4
    total_h = HEADER + len(fitted) * (height + GUTTER) + GUTTER
    sheet = Image.new("RGB", (width, total_h), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    x = GUTTER
    for c, name in enumerate(COLUMNS):
        draw.text((x + 2, 5), f"{name} ({title})" if name == "ours" and title else name, fill=(0, 0, 0))
        x += col_w[c] + GUTTER
    y = HEADER
    for r in fitted:
        x = GUTTER
        for c, im in enumerate(r):
            sheet.paste(im, (x + (col_w[c] - im.width) // 2, y))
            x += col_w[c] + GUTTER
        y += height + GUTTER
    return sheet


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", type=Path, help="folder of photos")
    ap.add_argument("-o", "--output", type=Path, required=True, help="sheet file (.jpg or .png)")
    ap.add_argument("--weights", type=Path, default=None, help="weights folder (default: the built-in starter)")
    ap.add_argument("--decode", choices=("regression", "distribution", "mixed"), default=None,
                    help="decoding (default: instcolor's default)")
    ap.add_argument("--temperature", type=float, default=None, help="annealed-mean temperature of --decode distribution")
    ap.add_argument("--size", type=int, default=None, help="processing size (default: the weights' own)")
    ap.add_argument("--boxes", type=Path, default=None, help="instance boxes (<stem>.npz folder or JSON)")
    ap.add_argument("--detector", type=Path, default=None, help="ONNX detector for photos --boxes does not cover")
    ap.add_argument("--backend", choices=("torch", "onnxruntime", "auto"), default="torch")
    ap.add_argument("--limit", type=int, default=12, help="at most this many photos (default 12)")
    ap.add_argument("--every", type=int, default=1, help="take every K-th photo (default 1)")
    ap.add_argument("--height", type=int, default=192, help="height of each picture in pixels (default 192)")
    ap.add_argument("--quality", type=int, default=90, help="JPEG quality (default 90)")
    args = ap.parse_args(argv)

    from instcolor.imageio import ImageReadError
    from instcolor.prepare import as_rgb_uint8

    try:
        if args.every < 1 or args.height < 16 or not 1 <= args.quality <= 100:
            raise ValueError("--every >= 1, --height >= 16, --quality in 1..100")
        if args.output.suffix.lower() not in (".jpg", ".jpeg", ".png"):
            raise ValueError(f"-o {args.output}: give a .jpg or .png file name")
        if not args.output.parent.is_dir():
            raise ValueError(f"-o {args.output}: folder {args.output.parent} does not exist")
        files = common.photos(args.folder)[::args.every][:args.limit] if args.limit >= 1 else []
        if not files:
            raise ValueError("--limit must be >= 1")
        boxes_source = None
        if args.boxes is not None:
            from instcolor.detect import BoxesFile

            try:
                boxes_source = BoxesFile(args.boxes)
            except FileNotFoundError as e:
                raise ValueError(f"--boxes: {e}") from None
        colorizer = common.load_colorizer(args.weights, backend=args.backend, decode=args.decode,
                                          temperature=args.temperature)
        if args.detector is not None:
            from instcolor.detect import load_detector

            colorizer.detector = load_detector(str(args.detector))
    except (ValueError, common.MissingCapability) as e:
        return common.fail(str(e))

    rows, skipped = [], []
    for f in files:
        try:
            rgb = as_rgb_uint8(f)
        except (ImageReadError, FileNotFoundError) as e:
            skipped.append(str(e))
            continue
        boxes = None
        if boxes_source is not None:
            det = boxes_source.lookup(f)
            boxes = None if det is None else det.boxes
        if boxes is None and colorizer.detector is None:
            boxes = np.zeros((0, 4))
        ours = colorizer.colorize(rgb, boxes=boxes, size=args.size).rgb
        rows.append((grey_of(rgb, colorizer.ops), ours, rgb))
    for message in skipped:
        print(f"contact_sheet: skipped: {message}", file=sys.stderr)
    if not rows:
        return common.fail("no photo could be read")
    decode = getattr(colorizer, "decode", "regression")
    title = f"{decode}" + (f", T={colorizer.temperature:g}" if decode == "distribution" else "")
    sheet = build_sheet(rows, args.height, title)
    tmp = args.output.with_name(f".{args.output.name}.tmp{args.output.suffix}")
    if args.output.suffix.lower() == ".png":
        sheet.save(tmp, format="PNG")
    else:
        sheet.save(tmp, format="JPEG", quality=args.quality)
    tmp.replace(args.output)
    print(f"contact_sheet: wrote {args.output} ({len(rows)} photos, {sheet.width}x{sheet.height})", file=sys.stderr)
    return 1 if skipped else 0


if __name__ == "__main__":
    sys.exit(main())
