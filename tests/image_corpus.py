"""A corpus of malformed and unusual image files, written into a folder, with what reading each must give.

``write_corpus(folder)`` writes every file and returns ``{filename: Expect}``; the group functions
(``broken_files``, ``mode_files``, ...) write one group each. An ``Expect`` either names an error
(``error``: a substring of the ImageReadError message, which must also start with the file's name) or
describes the decoded image (``rgb`` within ``tol``, ``alpha``, ``high``, ``bit_depth``, a ``note``).
Used by tests/test_imageio.py and by the CLI tests. The encoders here (PNG with any bit depth,
uncompressed TIFF, an ICC profile with swapped primaries) are written by hand because Pillow cannot
write 16-bit RGB files, and so that bad headers can be made on purpose.
"""
from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image


@dataclass
class Expect:
    error: str | None = None           # the read must fail with this substring in the message
    rgb: np.ndarray | None = None      # expected (H, W, 3) uint8
    tol: float = 0.0                   # max |difference| per value allowed for rgb
    mean_tol: float | None = None      # instead of tol: max mean |difference| (lossy formats)
    alpha: np.ndarray | None = None    # expected alpha (dtype checked), None: must be None
    high: np.ndarray | None = None     # expected (H, W, 3) float in [0, 1], None: must be None
    high_tol: float = 1e-6
    bit_depth: int = 8
    note: str | None = None            # a substring one of the notes must contain
    format: str | None = None          # Pillow format name

    @property
    def ok(self) -> bool:
        return self.error is None


# ----------------------------------------------------------------------------- encoders
def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bytes(arr: np.ndarray, color_type: int, bit_depth: int = 8, extra=(), size=None) -> bytes:
    """A PNG of ``arr`` (H, W[, C]) with the given colour type / bit depth, filter 0 on every row.
    ``extra``: (kind, data) chunks placed before IDAT; ``size``: (w, h) to put in IHDR instead."""
    arr = np.asarray(arr)
    h, w = arr.shape[:2]
    raw = arr.astype(">u2" if bit_depth == 16 else np.uint8).tobytes()
    row = len(raw) // h
    data = b"".join(b"\x00" + raw[i * row:(i + 1) * row] for i in range(h))
    w_, h_ = size if size is not None else (w, h)
    out = [b"\x89PNG\r\n\x1a\n", _chunk(b"IHDR", struct.pack(">IIBBBBB", w_, h_, bit_depth, color_type, 0, 0, 0))]
    out += [_chunk(k, d) for k, d in extra]
    out += [_chunk(b"IDAT", zlib.compress(data)), _chunk(b"IEND", b"")]
    return b"".join(out)


def tiff_bytes(arr: np.ndarray, big_endian: bool = False, size=None) -> bytes:
    """An uncompressed one-strip TIFF of uint8 / uint16 ``arr`` (H, W) grey or (H, W, 3) RGB.
    ``size``: (w, h) to put in the header instead (the strip stays the real data)."""
    arr = np.asarray(arr)
    h, w = arr.shape[:2]
    spp = 1 if arr.ndim == 2 else arr.shape[2]
    bits = arr.dtype.itemsize * 8
    e = ">" if big_endian else "<"
    pixels = arr.astype(f"{e}u{arr.dtype.itemsize}").tobytes()
    w_, h_ = size if size is not None else (w, h)
    n_tags = 10
    ifd_at = 8
    extra_at = ifd_at + 2 + 12 * n_tags + 4
    bps_at, data_at = extra_at, extra_at + 8
    bps = (struct.pack(f"{e}HHH", bits, bits, bits) + b"\0\0") if spp == 3 else b"\0" * 8
    tags = [(256, 4, 1, w_), (257, 4, 1, h_), (258, 3, spp, bps_at if spp == 3 else bits), (259, 3, 1, 1),
            (262, 3, 1, 2 if spp == 3 else 1), (273, 4, 1, data_at), (277, 3, 1, spp), (278, 4, 1, h_),
            (279, 4, 1, len(pixels)), (284, 3, 1, 1)]
    out = (b"MM\x00\x2a" if big_endian else b"II\x2a\x00") + struct.pack(f"{e}I", ifd_at)
    out += struct.pack(f"{e}H", n_tags)
    for tag, typ, count, value in tags:
        if typ == 3 and count == 1:
            out += struct.pack(f"{e}HHIHH", tag, typ, count, value, 0)
        else:
            out += struct.pack(f"{e}HHII", tag, typ, count, value)
    out += struct.pack(f"{e}I", 0) + bps
    assert len(out) == data_at
    return out + pixels


def swapped_primaries_icc() -> bytes:
    """Pillow's sRGB profile with the red and blue colorants swapped and the description changed to
    'Swap built-in': converting (r, g, b) from it to sRGB gives (b, g, r)."""
    from PIL import ImageCms

    icc = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    n = struct.unpack(">I", icc[128:132])[0]
    tags = {}
    for i in range(n):
        sig, off, size = struct.unpack(">4sII", icc[132 + 12 * i:144 + 12 * i])
        tags[sig] = (off, size)
    (r_off, r_size), (b_off, b_size) = tags[b"rXYZ"], tags[b"bXYZ"]
    red, blue = bytes(icc[r_off:r_off + r_size]), bytes(icc[b_off:b_off + b_size])
    icc[r_off:r_off + r_size], icc[b_off:b_off + b_size] = blue, red
    d_off, d_size = tags[b"desc"]
    desc = bytes(icc[d_off:d_off + d_size])
    assert "sRGB".encode("utf-16-be") in desc
    icc[d_off:d_off + d_size] = desc.replace("sRGB".encode("utf-16-be"), "Swap".encode("utf-16-be"))
    icc[84:100] = bytes(16)  # profile ID: not computed
    return bytes(icc)


def _save(im: Image.Image, fmt: str, **kw) -> bytes:
    b = io.BytesIO()
    im.save(b, fmt, **kw)
    return b.getvalue()


def _pattern(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth, non-symmetric colour picture (H, W, 3) uint8 (survives JPEG with small error)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 40 + 180 * x / max(w - 1, 1)
    g = 30 + 150 * y / max(h - 1, 1)
    b = 128 + 90 * np.sin((x + 2 * y) / (w + h) * 6.0 + seed)
    img = np.stack((r, g, b), axis=2)
    img[: h // 4, : w // 4] = (250, 20, 20)  # a marker in the top-left corner
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def pillow_rgb(data: bytes) -> np.ndarray:
    """What Pillow alone decodes (the reference for lossy files without orientation or profile)."""
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


def _u16_to_u8(v) -> np.ndarray:
    return ((np.asarray(v).astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)


def _grey3(a):
    return np.repeat(np.asarray(a)[:, :, None], 3, axis=2)


# ----------------------------------------------------------------------------- groups
def broken_files(folder) -> dict[str, Expect]:
    """Empty, random, not-an-image, bad CRC, zero size, truncated PNG / JPEG at many offsets."""
    folder = Path(folder)
    out: dict[str, Expect] = {}
    rng = np.random.default_rng(7)

    def put(name, data, exp):
        (folder / name).write_bytes(data)
        out[name] = exp

    put("empty.png", b"", Expect(error="empty file"))
    put("random.jpg", rng.integers(0, 256, 4096).astype(np.uint8).tobytes(), Expect(error="not an image"))
    put("text.png", b"this is not an image\n" * 20, Expect(error="not an image"))
    put("jpeg_magic_only.jpg", b"\xff\xd8\xff\xe0 this is not a jpeg", Expect(error="cannot decode"))
    good = png_bytes(_pattern(24, 32), 2)
    bad_crc = bytearray(good)
    bad_crc[29] ^= 0xFF  # inside IHDR's CRC
    put("bad_crc.png", bytes(bad_crc), Expect(error=""))
    put("zero_width.png", png_bytes(np.zeros((1, 1, 3), np.uint8), 2, size=(0, 5)), Expect(error=""))
    # PNG: cut anywhere before the end of the compressed pixel data (the last IDAT's payload)
    idat_end = good.index(b"IEND") - 4 - 4 - 8  # start of IEND's length field, minus IDAT CRC, minus zlib tail
    for cut in sorted({1, 8, 12, 16, 25, 33, 40, 45, idat_end // 2, idat_end - 40, idat_end}):
        put(f"truncated_{cut:04d}.png", good[:cut], Expect(error=""))
    jpeg = _save(Image.fromarray(_pattern(64, 80)), "JPEG", quality=90)
    sos = jpeg.index(b"\xff\xda")
    for cut in sorted({2, 3, 10, 20, 100, sos, sos + 20, (sos + len(jpeg)) // 2, len(jpeg) - 100}):
        put(f"truncated_{cut:04d}.jpg", jpeg[:cut], Expect(error=""))
    return out


def bomb_files(folder) -> dict[str, Expect]:
    """Tiny files whose headers declare huge images (nothing may be decoded or allocated)."""
    folder = Path(folder)
    (folder / "bomb_30000x30000.png").write_bytes(
        png_bytes(np.zeros((1, 1, 3), np.uint8), 2, size=(30000, 30000)))
    (folder / "bomb_20000x20000.tif").write_bytes(tiff_bytes(np.zeros((4, 4), np.uint8), size=(20000, 20000)))
    return {"bomb_30000x30000.png": Expect(error="30000x30000 = 900.0 megapixels exceeds the limit of 100 megapixels"),
            "bomb_20000x20000.tif": Expect(error="20000x20000 = 400.0 megapixels exceeds the limit")}


def mode_files(folder) -> dict[str, Expect]:
    """One file per Pillow mode / bit depth the reader handles, with the pixels it must give."""
    folder = Path(folder)
    out: dict[str, Expect] = {}
    rgb = _pattern(20, 28)
    grey = np.asarray(Image.fromarray(rgb).convert("L"))

    def put(name, data, exp):
        (folder / name).write_bytes(data)
        out[name] = exp

    put("rgb.png", _save(Image.fromarray(rgb), "PNG"), Expect(rgb=rgb, format="PNG"))
    put("rgb.bmp", _save(Image.fromarray(rgb), "BMP"), Expect(rgb=rgb, format="BMP"))
    put("rgb.ppm", _save(Image.fromarray(rgb), "PPM"), Expect(rgb=rgb, format="PPM"))
    put("rgb.tif", _save(Image.fromarray(rgb), "TIFF"), Expect(rgb=rgb, format="TIFF"))
    put("rgb_lossless.webp", _save(Image.fromarray(rgb), "WEBP", lossless=True), Expect(rgb=rgb, format="WEBP"))
    jpg = _save(Image.fromarray(rgb), "JPEG", quality=95)
    put("rgb.jpg", jpg, Expect(rgb=pillow_rgb(jpg), format="JPEG"))
    put("grey.png", _save(Image.fromarray(grey), "PNG"), Expect(rgb=_grey3(grey)))
    put("grey.pgm", _save(Image.fromarray(grey), "PPM"), Expect(rgb=_grey3(grey), format="PPM"))
    bw = grey > 128
    put("bilevel.png", _save(Image.fromarray(bw), "PNG"), Expect(rgb=_grey3(np.where(bw, 255, 0).astype(np.uint8))))
    pal = Image.fromarray(rgb).quantize(16)
    put("palette.png", _save(pal, "PNG"), Expect(rgb=np.asarray(pal.convert("RGB"))))
    put("palette.gif", _save(pal, "GIF"), Expect(rgb=np.asarray(pal.convert("RGB")), format="GIF"))
    cmyk = Image.fromarray(rgb).convert("CMYK")
    jpg = _save(cmyk, "JPEG", quality=95)
    put("cmyk.jpg", jpg, Expect(rgb=pillow_rgb(jpg)))
    put("cmyk.tif", _save(cmyk, "TIFF"), Expect(rgb=np.asarray(cmyk.convert("RGB"))))
    # Pillow writes CMYK JPEGs with an Adobe marker and inverted values; reading must undo the inversion
    jpg = _save(Image.fromarray(rgb).convert("YCbCr"), "JPEG", quality=95)
    put("ycbcr.jpg", jpg, Expect(rgb=pillow_rgb(jpg)))
    from PIL import ImageCms

    to_lab = ImageCms.buildTransform(ImageCms.createProfile("sRGB"), ImageCms.createProfile("LAB"), "RGB", "LAB")
    lab = ImageCms.applyTransform(Image.fromarray(rgb), to_lab)
    lab.info.pop("icc_profile", None)  # a plain CIE Lab TIFF, no profile
    put("lab.tif", _save(lab, "TIFF"),
        Expect(rgb=rgb, mean_tol=1.5, note="CIE Lab"))
    # 16-bit greyscale: values > 255 (Pillow's RGB conversion would clip them to white)
    y, x = np.mgrid[0:20, 0:28]
    g16 = (1000 + 2000 * x + 300 * y).astype(np.uint16)  # 1000 .. 60700
    exp16 = Expect(rgb=_grey3(_u16_to_u8(g16)), high=_grey3(g16 / 65535.0), bit_depth=16)
    put("grey16.png", png_bytes(g16, 0, 16), exp16)
    put("grey16.tif", _save(Image.fromarray(g16), "TIFF"), exp16)
    put("grey16_be.tif", tiff_bytes(g16, big_endian=True), exp16)
    put("grey16_trns.png", png_bytes(g16, 0, 16, extra=[(b"tRNS", struct.pack(">H", int(g16[3, 5])))]),
        Expect(rgb=exp16.rgb, high=exp16.high, bit_depth=16,
               alpha=np.where(g16 == g16[3, 5], 0, 65535).astype(np.uint16)))
    i32 = (70000 * x + 5000 * y).astype(np.int32)  # up to 2 008 000: a true 32-bit range
    put("grey32.tif", _save(Image.fromarray(i32), "TIFF"),
        Expect(rgb=_grey3(np.round(i32 / (2 ** 31 - 1) * 255).astype(np.uint8)),
               high=_grey3(i32 / (2 ** 31 - 1)), bit_depth=32, note="32-bit integer"))
    i16 = (2000 * x + 10 * y).astype(np.int32)  # mode I but within 0..65535: read as 16-bit
    put("grey_int_16range.tif", _save(Image.fromarray(i16), "TIFF"),
        Expect(rgb=_grey3(_u16_to_u8(i16)), high=_grey3(i16 / 65535.0), bit_depth=16))
    f01 = (x / 27.0 * 0.8 + y / 19.0 * 0.2).astype(np.float32)
    put("float01.tif", _save(Image.fromarray(f01), "TIFF"),
        Expect(rgb=_grey3(np.round(f01 * 255).astype(np.uint8)), high=_grey3(f01), bit_depth=32, tol=1))
    fw = (f01 * 1000 - 200).astype(np.float32)
    fn = (fw - fw.min()) / (fw.max() - fw.min())
    put("float_wide.tif", _save(Image.fromarray(fw), "TIFF"),
        Expect(rgb=_grey3(np.round(fn * 255).astype(np.uint8)), high=_grey3(fn), bit_depth=32, tol=1,
               high_tol=1e-5, note="min-max normalised"))
    # 16-bit colour: Pillow alone keeps only the high byte
    rng = np.random.default_rng(3)
    c16 = rng.integers(0, 65536, (20, 28, 3)).astype(np.uint16)
    a16 = rng.integers(0, 65536, (20, 28)).astype(np.uint16)
    put("rgb16.png", png_bytes(c16, 2, 16), Expect(rgb=_u16_to_u8(c16), high=c16 / 65535.0, bit_depth=16))
    put("rgba16.png", png_bytes(np.concatenate((c16, a16[..., None]), 2), 6, 16),
        Expect(rgb=_u16_to_u8(c16), high=c16 / 65535.0, alpha=a16, bit_depth=16))
    put("greyalpha16.png", png_bytes(np.stack((g16, a16), 2), 4, 16),
        Expect(rgb=exp16.rgb, high=exp16.high, alpha=a16, bit_depth=16))
    put("rgb16_le.tif", tiff_bytes(c16), Expect(rgb=_u16_to_u8(c16), high=c16 / 65535.0, bit_depth=16))
    put("rgb16_be.tif", tiff_bytes(c16, big_endian=True), Expect(rgb=_u16_to_u8(c16), high=c16 / 65535.0, bit_depth=16))
    return out


_TRANSPOSE_TO_STORE = {  # orientation o: how to store the upright picture so that o makes it upright again
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90, 7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270}


_UNDO = {t: {Image.Transpose.ROTATE_90: Image.Transpose.ROTATE_270,
             Image.Transpose.ROTATE_270: Image.Transpose.ROTATE_90}.get(t, t) for t in _TRANSPOSE_TO_STORE.values()}


def orientation_exif(o: int, make: str = "instcolor-test") -> bytes:
    ex = Image.Exif()
    ex[0x0112] = o
    ex[0x010F] = make  # Make: an ordinary tag that must survive
    return ex.tobytes()


def orientation_files(folder) -> dict[str, Expect]:
    """EXIF orientations 1-8 (PNG exact, JPEG lossy) of one non-symmetric 30x20 picture; an invalid one."""
    folder = Path(folder)
    out: dict[str, Expect] = {}
    upright = _pattern(20, 30)
    for o in range(1, 9):
        stored = Image.fromarray(upright)
        if o in _TRANSPOSE_TO_STORE:
            stored = stored.transpose(_TRANSPOSE_TO_STORE[o])
        note = f"orientation {o}" if o != 1 else None
        (folder / f"orient_{o}.png").write_bytes(_save(stored, "PNG", exif=orientation_exif(o)))
        out[f"orient_{o}.png"] = Expect(rgb=upright, note=note)
        jpg = _save(stored, "JPEG", quality=95, exif=orientation_exif(o))
        (folder / f"orient_{o}.jpg").write_bytes(jpg)
        decoded = Image.open(io.BytesIO(jpg)).convert("RGB")  # JPEG's loss, then the inverse transpose
        if o in _TRANSPOSE_TO_STORE:
            decoded = decoded.transpose(_UNDO[_TRANSPOSE_TO_STORE[o]])
        out[f"orient_{o}.jpg"] = Expect(rgb=np.asarray(decoded), note=note)
    (folder / "orient_bad.png").write_bytes(_save(Image.fromarray(upright), "PNG", exif=orientation_exif(9)))
    out["orient_bad.png"] = Expect(rgb=upright, note="not 1-8")
    return out


def icc_files(folder) -> dict[str, Expect]:
    """An RGB PNG / JPEG tagged with a swapped-primaries profile (must convert), a broken profile and a
    profile of the wrong colour space (kept, with a note), an sRGB profile (no change)."""
    folder = Path(folder)
    from PIL import ImageCms

    rgb = _pattern(16, 24)
    im = Image.fromarray(rgb)
    swapped = swapped_primaries_icc()
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    xyz = ImageCms.ImageCmsProfile(ImageCms.createProfile("XYZ")).tobytes()
    jpg = _save(im, "JPEG", quality=95, icc_profile=swapped)
    files = {
        "icc_swapped.png": (_save(im, "PNG", icc_profile=swapped),
                            Expect(rgb=rgb[..., ::-1], tol=2, note="converted from ICC profile 'Swap built-in'")),
        "icc_swapped.jpg": (jpg, Expect(rgb=np.asarray(Image.open(io.BytesIO(jpg)).convert("RGB"))[..., ::-1], tol=2,
                                        note="converted from ICC profile")),
        "icc_srgb.png": (_save(im, "PNG", icc_profile=srgb), Expect(rgb=rgb)),
        "icc_broken.png": (_save(im, "PNG", icc_profile=b"\x00" * 20 + b"not a profile" * 10),
                           Expect(rgb=rgb, note="ICC profile unreadable")),
        "icc_wrong_space.png": (_save(im, "PNG", icc_profile=xyz), Expect(rgb=rgb, note="could not be applied")),
    }
    for name, (data, _) in files.items():
        (folder / name).write_bytes(data)
    return {name: exp for name, (_, exp) in files.items()}


def transparency_files(folder) -> dict[str, Expect]:
    """LA, RGBA, P with tRNS, RGB with a tRNS colour key, a GIF with a transparent index, opaque RGBA."""
    folder = Path(folder)
    out: dict[str, Expect] = {}
    rgb = _pattern(12, 18)
    y, x = np.mgrid[0:12, 0:18]
    a = ((x * 14 + y * 3) % 256).astype(np.uint8)
    grey = np.asarray(Image.fromarray(rgb).convert("L"))

    def put(name, data, exp):
        (folder / name).write_bytes(data)
        out[name] = exp

    put("rgba.png", _save(Image.fromarray(np.dstack((rgb, a))), "PNG"), Expect(rgb=rgb, alpha=a))
    put("la.png", _save(Image.merge("LA", (Image.fromarray(grey), Image.fromarray(a))), "PNG"),
        Expect(rgb=_grey3(grey), alpha=a))
    put("rgba_opaque.png", _save(Image.fromarray(np.dstack((rgb, np.full_like(a, 255)))), "PNG"),
        Expect(rgb=rgb, alpha=None))
    pal = Image.fromarray(rgb).quantize(8)
    idx = np.asarray(pal)
    t = int(idx[0, 0])
    pa = np.where(idx == t, 0, 255).astype(np.uint8)
    prgb = np.asarray(pal.convert("RGB"))
    put("palette_trns.png", _save(pal, "PNG", transparency=t), Expect(rgb=prgb, alpha=pa))
    put("palette_trns.gif", _save(pal, "GIF", transparency=t), Expect(rgb=prgb, alpha=pa))
    key = tuple(int(v) for v in rgb[0, 0])
    ka = np.where((rgb == np.array(key, np.uint8)).all(-1), 0, 255).astype(np.uint8)
    put("rgb_colorkey.png", _save(Image.fromarray(rgb), "PNG", transparency=key), Expect(rgb=rgb, alpha=ka))
    return out


def animated_files(folder) -> dict[str, Expect]:
    """3-frame GIF, APNG and WebP: the first frame, and a note saying so."""
    folder = Path(folder)
    frames = [Image.fromarray(np.full((10, 14, 3), (40 * i + 20, 200 - 50 * i, 90), np.uint8)) for i in range(3)]
    first = np.asarray(frames[0])
    out = {}
    for name, fmt, kw in (("anim.gif", "GIF", {}), ("anim.png", "PNG", {}), ("anim.webp", "WEBP", {"lossless": True})):
        (folder / name).write_bytes(_save(frames[0], fmt, save_all=True, append_images=frames[1:], **kw))
        out[name] = Expect(rgb=first, tol=3 if fmt == "GIF" else 0, note="used frame 1 of 3")
    return out


GROUPS = (broken_files, bomb_files, mode_files, orientation_files, icc_files, transparency_files, animated_files)


def write_corpus(folder) -> dict[str, Expect]:
    """Write every group into ``folder`` (created if needed) -> {filename: Expect}."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, Expect] = {}
    for group in GROUPS:
        files = group(folder)
        assert not set(files) & set(out)
        out.update(files)
    return out
