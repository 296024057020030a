"""The one image reader and writer: every file the CLI, the API, training, eval, detection and the
server read goes through here.

Reading (:func:`read_image`) turns any supported file into a :class:`DecodedImage`: upright (EXIF
orientation applied), sRGB (embedded ICC profiles converted), 8-bit RGB for the networks, with the
transparency, the full-precision pixels of >8-bit sources, the EXIF block and notes kept beside it.
Every failure is an :class:`ImageReadError` (a ValueError) whose message starts with the file's name;
a missing path is an :class:`ImageNotFoundError` (also a FileNotFoundError).

Decisions and limits (see also the notes each image carries):

- Pixel limit: the size in the header is checked before any pixel is decoded against ``max_pixels``
  (default 100 megapixels, ``INSTCOLOR_MAX_PIXELS``). While a file is decoded, Pillow's own bomb
  limit (``PIL.Image.MAX_IMAGE_PIXELS``, also applied to TIFF tiles and GIF frames) is set to the
  same value and restored afterwards; a module lock makes that swap safe, so decodes in one process
  run one at a time. Pillow's DecompressionBombError / DecompressionBombWarning become the same
  ImageReadError.
- 16-bit and 32-bit sources: ``I;16*`` greyscale is scaled by 1/65535. Pillow mode ``I`` (signed 32-bit)
  is treated as 16-bit when no value exceeds 65535 (how older Pillow versions open 16-bit PNGs),
  else scaled by 1/(2**31 - 1), the largest value the mode holds; negatives become 0. Mode ``F``
  (32-bit float) is taken as [0, 1] when all finite values lie in it, else min-max normalised
  (a note says so); NaN and infinities become 0.
- 16-bit RGB / RGBA / grey+alpha PNG and 16-bit RGB(A) TIFF: Pillow opens these as 8-bit modes
  keeping only the high byte. The reader decodes the file a second time with the opposite-byte
  unpacker (the same Pillow decoder and filters, only the rawmode swapped) and joins the two
  bytes, so ``high`` is exact. Premultiplied (``RGBa;16``) and other 16-bit layouts stay 8-bit
  with a note.
- ICC: converted with Pillow's ImageCms (LittleCMS, perceptual intent) at 8-bit precision. A
  profile whose description names sRGB is taken as sRGB (no conversion). For a >8-bit source with
  another profile ``high`` is None (the conversion cannot be done at full precision here; a note
  says so). Without ImageCms or with a broken profile the pixels are kept and a note says so.
- EXIF orientation: the EXIF Orientation tag (values 1-8, ImageOps.exif_transpose semantics);
  XMP orientation is not read. Other values are ignored with a note.
- Animated / multi-frame files (GIF, APNG, WebP, MPO, multi-page TIFF): the first frame is used.
"""
from __future__ import annotations

import io
import os
import sys
import threading
import warnings
import struct
import zlib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

#: File suffixes read as images when a folder is given.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm"})

DEFAULT_MAX_PIXELS = 100_000_000
MAX_PIXELS_ENV = "INSTCOLOR_MAX_PIXELS"

#: Output formats of :func:`write_image` / :func:`encode_image` and their file suffixes.
SUFFIX_FOR_FORMAT = {"png": ".png", "jpg": ".jpg", "webp": ".webp"}

_ORIENTATION_TAG = 0x0112
_EXIF_PREFIX = b"Exif\x00\x00"


class ImageReadError(ValueError):
    """An image file that cannot be read; the message starts with the file's name."""


class ImageNotFoundError(ImageReadError, FileNotFoundError):
    """The image path does not exist (both an ImageReadError and a FileNotFoundError)."""


def max_pixels_limit(value=None) -> int:
    """The pixel limit: ``value`` if given, else ``$INSTCOLOR_MAX_PIXELS``, else 100 megapixels.
    ValueError (saying where the value came from) unless it is a positive whole number."""
    if value is None:
        raw = os.environ.get(MAX_PIXELS_ENV, "").strip()
        if not raw:
            return DEFAULT_MAX_PIXELS
        try:
            n = int(raw)
        except ValueError:
            n = 0
        if n < 1:
            raise ValueError(f"{MAX_PIXELS_ENV}={raw!r}: expected a positive whole number of pixels")
        return n
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"max_pixels: expected a positive whole number of pixels, got {value!r}")
    return int(value)


@dataclass
class DecodedImage:
    """One decoded image file (see the module docstring for the conventions)."""

    rgb: np.ndarray                 # (H, W, 3) uint8 sRGB, upright
    alpha: np.ndarray | None = None  # (H, W) uint8, or uint16 for 16-bit sources; None when opaque
    high: np.ndarray | None = None   # (H, W, 3) float32 in [0, 1] for > 8-bit sources, else None
    format: str = ""                 # Pillow's format name ("JPEG", "PNG", ...)
    exif: bytes | None = None        # the EXIF block with Orientation reset to 1
    icc: bytes | None = None         # the embedded ICC profile (pixels were converted from it)
    bit_depth: int = 8               # bits per channel of the source: 8, 16 or 32
    notes: list[str] = field(default_factory=list)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the upright image."""
        return self.rgb.shape[1], self.rgb.shape[0]


# ----------------------------------------------------------------------------- sources
def _source(source, name):
    """-> (label, opener): ``opener()`` returns a fresh binary file object positioned at the image."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        label = name if name is not None else str(source)
        if not path.exists():
            raise ImageNotFoundError(f"{label}: no such file")
        if path.is_dir():
            raise ImageReadError(f"{label}: is a folder, not an image file")

        def opener():
            try:
                return open(path, "rb")
            except FileNotFoundError:
                raise ImageNotFoundError(f"{label}: no such file") from None
            except OSError as e:
                raise ImageReadError(f"{label}: cannot open: {e.strerror or e}") from None
        return label, opener
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        return (name if name is not None else "<bytes>"), (lambda: io.BytesIO(data))
    if hasattr(source, "read"):
        label = name if name is not None else str(getattr(source, "name", "<stream>"))
        try:
            start = source.tell() if source.seekable() else None
        except (OSError, ValueError, AttributeError):
            start = None
        if start is None:
            try:
                data = source.read()
            except Exception as e:  # noqa: BLE001 - any stream failure is a read error
                raise ImageReadError(f"{label}: cannot read: {e}") from None
            if not isinstance(data, (bytes, bytearray)):
                raise ImageReadError(f"{label}: the stream did not return bytes")
            return label, (lambda: io.BytesIO(bytes(data)))

        def opener():
            source.seek(start)
            return _Unclosable(source, start)
        return label, opener
    raise TypeError(f"read_image: expected a path, bytes or a binary file object, got {type(source).__name__}")


class _Unclosable(io.BufferedIOBase):
    """A view of the caller's stream from ``start`` on, which Pillow may close without closing the stream."""

    def __init__(self, raw, start: int = 0):
        self._raw = raw
        self._start = start

    def read(self, n=-1):
        return self._raw.read(n)

    def read1(self, n=-1):
        return self._raw.read(n)

    def readinto(self, b):
        data = self._raw.read(len(b))
        b[:len(data)] = data
        return len(data)

    def seek(self, pos, whence=0):
        if whence == 0:
            pos += self._start
        return self._raw.seek(pos, whence) - self._start

    def tell(self):
        return self._raw.tell() - self._start

    def readable(self):
        return True

    def seekable(self):
        return True


# ----------------------------------------------------------------------------- pillow limit
_PILLOW_LOCK = threading.RLock()


class _PillowLimit:
    """Within: ``Image.MAX_IMAGE_PIXELS`` = the caller's limit, warnings recorded; restored on exit."""

    def __init__(self, limit: int):
        self.limit = limit

    def __enter__(self):
        from PIL import Image

        _PILLOW_LOCK.acquire()
        self._saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = self.limit
        self._warn = warnings.catch_warnings(record=True)
        self.caught = self._warn.__enter__()
        warnings.simplefilter("always")
        return self

    def __exit__(self, *exc):
        from PIL import Image

        try:
            self._warn.__exit__(*exc)
        finally:
            Image.MAX_IMAGE_PIXELS = self._saved
            _PILLOW_LOCK.release()
        return False


def _limit_message(label: str, w: int, h: int, limit: int) -> str:
    return (f"{label}: {w}x{h} = {w * h / 1e6:.1f} megapixels exceeds the limit of {limit / 1e6:g} megapixels "
            f"(--max-pixels / {MAX_PIXELS_ENV})")


# ----------------------------------------------------------------------------- reading
def read_image(source, *, name: str | None = None, max_pixels: int | None = None) -> DecodedImage:
    """Decode an image file (path, bytes or binary file object) -> :class:`DecodedImage`.

    ``name``: how errors and notes call the file (default: the path, ``<bytes>`` or the stream's
    name). ``max_pixels``: the pixel limit (:func:`max_pixels_limit`). Raises ImageReadError
    (ImageNotFoundError for a missing path), whose message starts with ``name``."""
    limit = max_pixels_limit(max_pixels)
    label, opener = _source(source, name)
    try:
        with _PillowLimit(limit) as guard:
            out = _decode(label, opener, limit)
            for w in guard.caught:
                if issubclass(w.category, (ResourceWarning, DeprecationWarning, PendingDeprecationWarning)):
                    continue
                text = str(w.message)
                if issubclass(w.category, _bomb_warning()):
                    raise ImageReadError(f"{label}: {text} (limit {limit / 1e6:g} megapixels: --max-pixels / "
                                         f"{MAX_PIXELS_ENV})")
                if text not in out.notes:
                    out.notes.append(f"decoder warning: {text}")
        return out
    except ImageReadError:
        raise
    except MemoryError:
        raise ImageReadError(f"{label}: not enough memory to decode the image") from None
    except Exception as e:  # noqa: BLE001 - untrusted input: every decoder failure names the file
        from PIL import Image

        if isinstance(e, Image.DecompressionBombError):
            raise ImageReadError(f"{label}: {e} (--max-pixels / {MAX_PIXELS_ENV})") from None
        raise ImageReadError(f"{label}: cannot decode the image: {_why(e)}") from e


def _bomb_warning():
    from PIL import Image

    return Image.DecompressionBombWarning


def _why(e: BaseException) -> str:
    text = str(e).strip()
    if "cannot identify image file" in text:
        return "not an image file, or a format Pillow cannot read"
    if "truncated" in text or isinstance(e, EOFError) or "unexpected end" in text.lower():
        return f"truncated or damaged file ({text or type(e).__name__})"
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _decode(label: str, opener, limit: int) -> DecodedImage:
    with opener() as fp:
        return _decode_open(label, fp, opener, limit)


def _decode_open(label: str, fp, opener, limit: int) -> DecodedImage:
    from PIL import Image, UnidentifiedImageError

    try:
        fp.seek(0, 2)
        empty = fp.tell() == 0
        fp.seek(0)
    except (OSError, ValueError):
        empty = False
    if empty:
        raise ImageReadError(f"{label}: empty file")
    try:
        Image.MAX_IMAGE_PIXELS = None  # the header size is checked below with this module's message
        try:
            im = Image.open(fp)
        finally:
            Image.MAX_IMAGE_PIXELS = limit  # frames, tiles and decode: Pillow's check at this limit
    except UnidentifiedImageError:
        raise ImageReadError(f"{label}: not an image file, or a format Pillow cannot read") from None
    with im:
        w, h = im.size
        if w < 1 or h < 1:
            raise ImageReadError(f"{label}: the header gives an empty size {w}x{h}")
        if w * h > limit:
            raise ImageReadError(_limit_message(label, w, h, limit))
        fmt = im.format or ""
        notes: list[str] = []
        _first_frame(im, fmt, notes)
        tiles = list(getattr(im, "tile", []) or [])
        im.load()
        orientation = _orientation(im, notes)
        exif = _exif_bytes(im, notes)
        icc = im.info.get("icc_profile") or None
        if not isinstance(icc, (bytes, bytearray)):
            icc = None
        rgb, alpha, high, depth = _pixels(im, label, opener, tiles, notes)
        rgb, alpha, high = _apply_icc(rgb, alpha, high, icc, depth, notes)
        if high is not None and high.ndim == 2:
            high = _grey3(high)
    rgb, alpha, high = (_orient(a, orientation) if a is not None else None for a in (rgb, alpha, high))
    if alpha is not None and alpha.min() == np.iinfo(alpha.dtype).max:
        alpha = None
    return DecodedImage(rgb=_own(rgb), alpha=_own(alpha), high=_own(high), format=fmt,
                        exif=exif, icc=bytes(icc) if icc else None, bit_depth=depth, notes=notes)


def _own(a):
    if a is None:
        return None
    a = np.ascontiguousarray(a)
    return a if a.flags.writeable and a.base is None else a.copy()


def _first_frame(im, fmt: str, notes: list[str]) -> None:
    n = 1
    try:
        if getattr(im, "is_animated", False) or getattr(im, "n_frames", 1) > 1:
            n = int(im.n_frames)
    except Exception:  # noqa: BLE001 - counting frames of a damaged file: the first frame may still load
        n = 0
    if n == 1:
        return
    what = {"GIF": "animated GIF", "PNG": "animated PNG", "WEBP": "animated WebP", "MPO": "multi-picture JPEG (MPO)",
            "TIFF": "multi-page TIFF"}.get(fmt, f"multi-frame {fmt or 'file'}")
    notes.append(f"{what}: used frame 1 of {n}" if n > 1 else f"{what}: used frame 1")
    im.seek(0)


def _orientation(im, notes: list[str]) -> int:
    try:
        value = im.getexif().get(_ORIENTATION_TAG, 1)
    except Exception as e:  # noqa: BLE001 - corrupt EXIF does not spoil the pixels
        notes.append(f"EXIF unreadable, orientation not applied: {_why(e)}")
        return 1
    if isinstance(value, (tuple, list)) and value:
        value = value[0]
    if not isinstance(value, int) or not 1 <= value <= 8:
        notes.append(f"EXIF orientation {value!r} is not 1-8: ignored")
        return 1
    if value != 1:
        notes.append(f"EXIF orientation {value} applied")
    return value


def _exif_bytes(im, notes: list[str]) -> bytes | None:
    raw = im.info.get("exif")
    if not isinstance(raw, (bytes, bytearray)) or not raw:
        return None
    from PIL import Image

    try:
        exif = Image.Exif()
        exif.load(bytes(raw))
        if _ORIENTATION_TAG in exif:
            exif[_ORIENTATION_TAG] = 1
        return exif.tobytes()
    except Exception as e:  # noqa: BLE001
        notes.append(f"EXIF block unreadable, not kept: {_why(e)}")
        return None


def _orient(a: np.ndarray, orientation: int) -> np.ndarray:
    """EXIF orientation -> upright (the transposes of ImageOps.exif_transpose)."""
    if orientation == 2:
        return a[:, ::-1]
    if orientation == 3:
        return a[::-1, ::-1]
    if orientation == 4:
        return a[::-1]
    if orientation == 5:
        return a.swapaxes(0, 1)
    if orientation == 6:
        return np.rot90(a, -1)
    if orientation == 7:
        return a[::-1, ::-1].swapaxes(0, 1)
    if orientation == 8:
        return np.rot90(a, 1)
    return a


# --- pixels
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def _u16_to_u8(v: np.ndarray) -> np.ndarray:
    return ((v.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)


def _grey3(a: np.ndarray) -> np.ndarray:
    return np.repeat(a[:, :, None], 3, axis=2)


def _pixels(im, label, opener, tiles, notes):
    """-> (rgb uint8 (H,W,3) or grey (H,W), alpha, high float32 or None, bit depth) before ICC and orientation."""
    mode = im.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        return _from_u16(np.asarray(im).astype(np.uint16), im.info.get("transparency"), 16)
    if mode == "I":
        a = np.asarray(im).astype(np.int64)
        a = np.clip(a, 0, None)
        if a.size and a.max() > 65535:
            high = (a / float(2 ** 31 - 1)).astype(np.float32)
            notes.append("32-bit integer greyscale: scaled by 1/(2^31-1)")
            return np.round(high * 255).astype(np.uint8), None, high, 32
        return _from_u16(a.astype(np.uint16), im.info.get("transparency"), 16)
    if mode == "F":
        a = np.asarray(im).astype(np.float64)
        bad = ~np.isfinite(a)
        if bad.any():
            a = np.where(bad, 0.0, a)
            notes.append(f"32-bit float greyscale: {int(bad.sum())} NaN/infinite value(s) set to 0")
        lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 1.0)
        if lo < 0.0 or hi > 1.0:
            a = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
            notes.append(f"32-bit float greyscale outside [0, 1] (min {lo:g}, max {hi:g}): min-max normalised")
        high = a.astype(np.float32)
        return np.round(high * 255).astype(np.uint8), None, high, 32
    deep = _deep16(im, opener, tiles, notes)
    if deep is not None:
        return deep
    return _pixels8(im, notes)


def _from_u16(v: np.ndarray, transparency, depth):
    alpha = None
    if isinstance(transparency, int) and not isinstance(transparency, bool):
        alpha = np.where(v == transparency, 0, 65535).astype(np.uint16)
    return _u16_to_u8(v), alpha, (v / 65535.0).astype(np.float32), depth


_SWAP = {"B": "L", "L": "B", "N": "B" if sys.byteorder == "little" else "L"}


def _tile_rawmode(t):
    args = t[3]
    if isinstance(args, str):
        return args
    if isinstance(args, tuple) and args and isinstance(args[0], str):
        return args[0]
    return None


def _with_rawmode(t, rawmode):
    args = t[3]
    args = rawmode if isinstance(args, str) else (rawmode,) + tuple(args[1:])
    return t._replace(args=args) if hasattr(t, "_replace") else (t[0], t[1], t[2], args)


def _deep16(im, opener, tiles, notes):
    """16-bit RGB / RGBA / LA sources that Pillow reads as 8-bit: decode again with the other byte."""
    raws = {_tile_rawmode(t) for t in tiles}
    if len(raws) != 1:
        return None
    raw = raws.pop()
    if raw is None or im.mode not in ("RGB", "RGBA"):
        return None
    if raw == "LA;16B":
        other = "RGBA"  # same 32 bits per pixel: R, G = grey high, low; B, A = alpha high, low
    elif raw.startswith(("RGB;16", "RGBA;16", "RGBX;16")) and raw[-1] in _SWAP:
        other = raw[:-1] + _SWAP[raw[-1]]
    else:
        if raw.endswith(("16B", "16L", "16N")):
            notes.append(f"16-bit {raw.split(';')[0]} data read at 8-bit precision (layout not supported at 16 bits)")
        return None
    from PIL import Image

    hi = np.asarray(im)
    with opener() as fp2, Image.open(fp2) as im2:
        if im2.size != im.size or im2.mode != im.mode or [_tile_rawmode(t) for t in im2.tile] != [raw] * len(tiles):
            return None
        im2.tile = [_with_rawmode(t, other) for t in im2.tile]
        im2.load()
        lo = np.asarray(im2)
    if raw == "LA;16B":
        grey = lo[..., 0].astype(np.uint16) << 8 | lo[..., 1]
        alpha = lo[..., 2].astype(np.uint16) << 8 | lo[..., 3]
        if not np.array_equal(lo[..., 0], hi[..., 0]):
            return None
        return _u16_to_u8(grey), alpha, (grey / 65535.0).astype(np.float32), 16
    v = hi.astype(np.uint16) << 8 | lo
    rgb16 = v[..., :3]
    alpha = v[..., 3] if v.shape[-1] == 4 and im.mode == "RGBA" else None
    trns = im.info.get("transparency")
    if alpha is None and isinstance(trns, tuple) and len(trns) == 3:
        alpha = np.where((rgb16 == np.array(trns, np.uint16)).all(-1), 0, 65535).astype(np.uint16)
    return _u16_to_u8(rgb16), alpha, (rgb16 / 65535.0).astype(np.float32), 16


def _pixels8(im, notes):
    from PIL import Image

    mode = im.mode
    has_alpha = mode in _ALPHA_MODES or "transparency" in im.info
    alpha = None
    if has_alpha:
        rgba = im.convert("LA" if mode in ("LA", "La", "L", "1") else "RGBA")
        alpha = np.asarray(rgba.getchannel("A"))
        base = rgba.convert("L" if rgba.mode == "LA" else "RGB")
    elif mode in ("1", "L"):
        base = im.convert("L")
    elif mode in ("RGB", "CMYK"):
        base = im
    elif mode == "LAB":
        base = im  # converted by _apply_icc (Lab -> sRGB)
    else:
        try:
            base = im.convert("RGB")
        except ValueError as e:
            raise ImageReadError(f"unsupported image mode {mode}: {e}") from None
    if base.mode not in ("CMYK", "LAB"):
        return np.asarray(base), alpha, None, 8
    return base, alpha, None, 8  # a PIL image: _apply_icc converts it


# --- ICC
@lru_cache(maxsize=1)
def _srgb_profile():
    from PIL import ImageCms

    return ImageCms.createProfile("sRGB")


@lru_cache(maxsize=1)
def srgb_icc_bytes() -> bytes | None:
    """An sRGB ICC profile (Pillow's ImageCms) to tag output files with; None without ImageCms."""
    try:
        from PIL import ImageCms

        return ImageCms.ImageCmsProfile(_srgb_profile()).tobytes()
    except Exception:  # noqa: BLE001 - no LittleCMS in this Pillow build
        return None


def _apply_icc(rgb, alpha, high, icc, depth, notes):
    """Convert the colour pixels (a PIL image for CMYK / Lab, else an (H, W) grey or (H, W, 3) uint8
    array) to sRGB -> ((H, W, 3) uint8 rgb, alpha, high)."""
    from PIL import Image

    pil = rgb if isinstance(rgb, Image.Image) else None
    arr = None if pil is not None else rgb
    cms = None
    try:
        from PIL import ImageCms

        cms = ImageCms
    except ImportError:
        pass
    if pil is not None and pil.mode == "LAB" and not icc:
        if cms is None:
            raise ImageReadError("CIE Lab image needs Pillow's ImageCms to convert, which is not available")
        out = cms.applyTransform(pil, cms.buildTransform(cms.createProfile("LAB"), _srgb_profile(), "LAB", "RGB"))
        notes.append("converted from CIE Lab to sRGB")
        return np.asarray(out), alpha, None
    if not icc:
        if pil is not None:
            return np.asarray(pil.convert("RGB")), alpha, None
        return (arr if arr.ndim == 3 else _grey3(arr)), alpha, high
    if pil is None:
        pil = Image.fromarray(np.ascontiguousarray(arr))
    fallback = pil.convert("RGB") if pil.mode != "RGB" else pil
    if cms is None:
        notes.append("ICC profile present but Pillow's ImageCms is not available: pixels not converted")
        return np.asarray(fallback), alpha, high
    try:
        prof = cms.ImageCmsProfile(io.BytesIO(bytes(icc)))
        desc = (cms.getProfileDescription(prof) or "").strip()
    except Exception as e:  # noqa: BLE001 - a broken profile keeps the pixels
        notes.append(f"embedded ICC profile unreadable, pixels not converted: {_why(e)}")
        return np.asarray(fallback), alpha, high
    if "srgb" in desc.lower():
        return np.asarray(fallback), alpha, high
    try:
        out = cms.applyTransform(pil, cms.buildTransform(prof, _srgb_profile(), pil.mode, "RGB"))
    except Exception as e:  # noqa: BLE001
        notes.append(f"ICC profile {desc!r} could not be applied, pixels not converted: {_why(e)}")
        return np.asarray(fallback), alpha, high
    notes.append(f"converted from ICC profile {desc!r} to sRGB")
    if high is not None:
        notes.append(f"{depth}-bit precision not kept: the ICC conversion runs at 8 bits")
        high = None
    return np.asarray(out), alpha, high


# ----------------------------------------------------------------------------- writing
def output_format_for(input_format: str) -> str:
    """The output format for an input of Pillow format ``input_format``: JPEG stays JPEG, the rest PNG."""
    return "jpg" if str(input_format).upper() in ("JPEG", "MPO") else "png"


def _exif_with_prefix(exif, who: str = "write_image") -> bytes | None:
    if exif is None:
        return None
    if not isinstance(exif, (bytes, bytearray)):
        raise TypeError(f"{who}: exif must be bytes, got {type(exif).__name__}")
    exif = bytes(exif)
    if not exif:
        return None
    return exif if exif.startswith(_EXIF_PREFIX) else _EXIF_PREFIX + exif


def _check_quality(quality, fmt: str, who: str = "write_image") -> int:
    default = {"jpg": 95, "webp": 90}.get(fmt)
    if quality is None:
        return default
    if isinstance(quality, bool) or not isinstance(quality, (int, np.integer)) or not 1 <= quality <= 100:
        raise ValueError(f"{who}: quality must be a whole number 1-100, got {quality!r}")
    return int(quality)


def encode_image(rgb, *, format: str = "png", quality: int | None = None, exif: bytes | None = None,
                 alpha: np.ndarray | None = None, icc_srgb: bool = True) -> bytes:
    """Encode ``rgb`` (H, W, 3) sRGB as an image file in memory -> its bytes.

    ``format``: "png", "jpg" (or "jpeg") or "webp". ``rgb`` uint8, or uint16 with png (a 16-bit PNG).
    ``quality``: JPEG (default 95, 4:4:4 chroma) / WebP (default 90); ignored for png.
    ``alpha`` (H, W): re-attached for png / webp (RGBA), dropped for jpg; uint8, or uint16 with a
    uint16 ``rgb`` (a uint8 alpha is widened by 257 there, a uint16 alpha beside uint8 rgb rounded
    to 8 bits). ``exif``: an EXIF block (with or without the ``Exif\\0\\0`` prefix) written as is.
    ``icc_srgb``: embed an sRGB ICC profile (when Pillow has ImageCms). ValueError / TypeError
    for arguments that do not fit."""
    return _encode(rgb, format, quality, exif, alpha, icc_srgb, "encode_image")


def _encode(rgb, format, quality, exif, alpha, icc_srgb, who: str) -> bytes:
    fmt = str(format).lower()
    fmt = "jpg" if fmt == "jpeg" else fmt
    if fmt not in SUFFIX_FOR_FORMAT:
        raise ValueError(f"{who}: format must be one of {sorted(SUFFIX_FOR_FORMAT)}, got {format!r}")
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] < 1 or rgb.shape[1] < 1:
        raise ValueError(f"{who}: rgb must be (H, W, 3), got {rgb.shape}")
    if rgb.dtype not in (np.uint8, np.uint16):
        raise TypeError(f"{who}: rgb must be uint8 or uint16, got {rgb.dtype}")
    if rgb.dtype == np.uint16 and fmt != "png":
        raise ValueError(f"{who}: 16-bit output needs format 'png', not {format!r}")
    q = _check_quality(quality, fmt, who)
    exif_bytes = _exif_with_prefix(exif, who)
    if alpha is not None and fmt != "jpg":
        alpha = np.asarray(alpha)
        if alpha.shape != rgb.shape[:2]:
            raise ValueError(f"{who}: alpha must be {rgb.shape[:2]} like the image, got {alpha.shape}")
        if alpha.dtype not in (np.uint8, np.uint16):
            raise TypeError(f"{who}: alpha must be uint8 or uint16, got {alpha.dtype}")
        if rgb.dtype == np.uint16 and alpha.dtype == np.uint8:
            alpha = alpha.astype(np.uint16) * 257
        elif rgb.dtype == np.uint8 and alpha.dtype == np.uint16:
            alpha = _u16_to_u8(alpha)
    else:
        alpha = None
    icc = srgb_icc_bytes() if icc_srgb else None
    if rgb.dtype == np.uint16:
        return _png16(rgb, alpha, icc, exif_bytes)
    from PIL import Image

    pixels = rgb if alpha is None else np.concatenate((rgb, alpha[:, :, None]), axis=2)
    im = Image.fromarray(np.ascontiguousarray(pixels))
    opts: dict = {}
    if icc:
        opts["icc_profile"] = icc
    if exif_bytes:
        opts["exif"] = exif_bytes
    if fmt == "jpg":
        opts.update(quality=q, subsampling=0)
        pil_format = "JPEG"
    elif fmt == "webp":
        opts.update(quality=q)
        pil_format = "WEBP"
    else:
        pil_format = "PNG"
    buf = io.BytesIO()
    im.save(buf, format=pil_format, **opts)
    return buf.getvalue()


def write_image(path, rgb, *, format: str = "png", quality: int | None = None, exif: bytes | None = None,
                alpha: np.ndarray | None = None, icc_srgb: bool = True) -> None:
    """Write ``rgb`` (H, W, 3) sRGB to ``path`` atomically (never a partial file at ``path``):
    the bytes of :func:`encode_image` (same arguments, same rules), written to a temporary name
    and renamed."""
    from ._fileio import atomic_path

    data = _encode(rgb, format, quality, exif, alpha, icc_srgb, "write_image")
    with atomic_path(Path(path)) as tmp:
        tmp.write_bytes(data)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png16(rgb: np.ndarray, alpha: np.ndarray | None, icc: bytes | None, exif: bytes | None) -> bytes:
    """A 16-bit RGB / RGBA PNG (Pillow cannot write those): Sub filter on every row, zlib level 6."""
    h, w = rgb.shape[:2]
    pixels = rgb if alpha is None else np.concatenate((rgb, alpha[:, :, None]), axis=2)
    bpp = pixels.shape[2] * 2
    rows = np.ascontiguousarray(pixels.astype(">u2")).view(np.uint8).reshape(h, w * bpp)
    filtered = np.empty((h, w * bpp + 1), np.uint8)
    filtered[:, 0] = 1  # Sub: each byte minus the byte one pixel to the left
    filtered[:, 1:bpp + 1] = rows[:, :bpp]
    filtered[:, bpp + 1:] = rows[:, bpp:] - rows[:, :-bpp]
    out = [b"\x89PNG\r\n\x1a\n",
           _png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 6 if alpha is not None else 2, 0, 0, 0))]
    if icc:
        out.append(_png_chunk(b"iCCP", b"sRGB\x00\x00" + zlib.compress(icc)))
    if exif:
        out.append(_png_chunk(b"eXIf", exif[len(_EXIF_PREFIX):] if exif.startswith(_EXIF_PREFIX) else exif))
    comp = zlib.compressobj(6)
    idat = comp.compress(filtered.tobytes()) + comp.flush()
    step = 1 << 20
    for i in range(0, len(idat), step):
        out.append(_png_chunk(b"IDAT", idat[i:i + step]))
    out.append(_png_chunk(b"IEND", b""))
    return b"".join(out)
