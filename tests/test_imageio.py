"""instcolor.imageio: the reader on a corpus of unusual and malformed files, the pixel limit, the writer."""
from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image

from instcolor import imageio as IO

import image_corpus as C


def check(path, exp: C.Expect, **kw):
    """Read ``path``; assert it matches ``exp`` (an ImageReadError naming the file, or the pixels)."""
    name = os.path.basename(str(path))
    if not exp.ok:
        with pytest.raises(IO.ImageReadError) as info:
            IO.read_image(path, **kw)
        msg = str(info.value)
        assert msg.startswith(str(path)), msg
        assert exp.error in msg, msg
        assert "\n" not in msg
        return None
    d = IO.read_image(path, **kw)
    assert d.rgb.dtype == np.uint8 and d.rgb.ndim == 3 and d.rgb.shape[2] == 3, name
    assert d.rgb.shape == exp.rgb.shape, (name, d.rgb.shape, exp.rgb.shape)
    diff = np.abs(d.rgb.astype(np.int32) - exp.rgb.astype(np.int32))
    if exp.mean_tol is not None:
        assert diff.mean() <= exp.mean_tol, (name, diff.mean())
    else:
        assert diff.max() <= exp.tol, (name, diff.max())
    if exp.alpha is None:
        assert d.alpha is None, name
    else:
        assert d.alpha is not None and d.alpha.dtype == exp.alpha.dtype, (name, d.alpha)
        np.testing.assert_array_equal(d.alpha, exp.alpha, err_msg=name)
    if exp.high is None:
        assert d.high is None, name
    else:
        assert d.high is not None and d.high.dtype == np.float32 and d.high.shape == exp.high.shape, name
        assert np.abs(d.high.astype(np.float64) - exp.high).max() <= exp.high_tol, name
    assert d.bit_depth == exp.bit_depth, (name, d.bit_depth)
    if exp.note is not None:
        assert any(exp.note in n for n in d.notes), (name, d.notes)
    if exp.format is not None:
        assert d.format == exp.format, (name, d.format)
    return d


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    return folder, C.write_corpus(folder)


def test_corpus_every_file(corpus):
    folder, files = corpus
    assert len(files) > 80
    for name, exp in sorted(files.items()):
        check(folder / name, exp)


def test_corpus_as_bytes_and_streams(corpus):
    """The same results for bytes and file objects (the server's inputs); errors use the given name."""
    folder, files = corpus
    for name, exp in sorted(files.items()):
        data = (folder / name).read_bytes()
        for source in (data, io.BytesIO(data)):
            if not exp.ok:
                with pytest.raises(IO.ImageReadError) as info:
                    IO.read_image(source, name=name)
                assert str(info.value).startswith(f"{name}: ") and exp.error in str(info.value)
            else:
                d = IO.read_image(source, name=name)
                ref = IO.read_image(folder / name)
                np.testing.assert_array_equal(d.rgb, ref.rgb, err_msg=name)


# ----------------------------------------------------------------------------- reader specifics
def test_16bit_grey_is_not_white(corpus):
    """The issue's case: Pillow's RGB conversion clips I;16 values > 255 to white; the reader scales."""
    folder, _ = corpus
    with Image.open(folder / "grey16.png") as im:
        naive = np.asarray(im.convert("RGB"))
        v = np.asarray(im).astype(np.float64)
    assert naive.mean() > 250  # what Pillow alone gives
    d = IO.read_image(folder / "grey16.png")
    assert abs(d.rgb.mean() - v.mean() / 257) < 0.5
    assert abs(d.high.mean() - v.mean() / 65535) < 1e-6


def test_16bit_rgb_keeps_the_low_byte(corpus):
    folder, files = corpus
    d = IO.read_image(folder / "rgb16.png")
    with Image.open(folder / "rgb16.png") as im:
        eight = np.asarray(im.convert("RGB")).astype(np.float64) * 257 / 65535
    exact = files["rgb16.png"].high
    assert np.abs(eight - exact).max() > 100 / 65535  # Pillow alone loses the low byte
    assert np.abs(d.high - exact).max() < 1e-6


def test_missing_and_folder(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        IO.read_image(tmp_path / "nope.png")
    assert isinstance(info.value, IO.ImageReadError) and str(info.value).startswith(str(tmp_path / "nope.png"))
    with pytest.raises(IO.ImageReadError, match="is a folder"):
        IO.read_image(tmp_path)
    with pytest.raises(TypeError, match="path, bytes"):
        IO.read_image(12345)


def test_unreadable_file(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("running as root: file permissions do not stop reading")
    p = tmp_path / "locked.png"
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(p)
    p.chmod(0)
    with pytest.raises(IO.ImageReadError, match="locked.png: cannot open"):
        IO.read_image(p)


def test_unseekable_stream_and_caller_stream_left_open(corpus):
    folder, files = corpus
    data = (folder / "orient_6.png").read_bytes()

    class Pipe(io.RawIOBase):
        def __init__(self):
            self.b = io.BytesIO(data)

        def readable(self):
            return True

        def readinto(self, buf):
            chunk = self.b.read(len(buf))
            buf[:len(chunk)] = chunk
            return len(chunk)

    d = IO.read_image(Pipe(), name="pipe")
    np.testing.assert_array_equal(d.rgb, files["orient_6.png"].rgb)
    stream = io.BytesIO(b"junk" + data)
    stream.seek(4)
    d = IO.read_image(stream, name="s")
    np.testing.assert_array_equal(d.rgb, files["orient_6.png"].rgb)
    assert not stream.closed


def test_exif_orientation_reset_and_tags_kept(corpus):
    folder, _ = corpus
    for name in ("orient_6.jpg", "orient_8.png"):
        d = IO.read_image(folder / name)
        ex = Image.Exif()
        ex.load(d.exif)
        assert ex[0x0112] == 1 and ex[0x010F] == "instcolor-test"
    assert IO.read_image(folder / "rgb.png").exif is None


def test_pixel_limit(corpus, monkeypatch):
    folder, files = corpus
    path = folder / "rgb.png"  # 28x20 = 560 pixels
    with pytest.raises(IO.ImageReadError) as info:
        IO.read_image(path, max_pixels=559)
    assert str(info.value) == (f"{path}: 28x20 = 0.0 megapixels exceeds the limit of 0.000559 megapixels "
                               "(--max-pixels / INSTCOLOR_MAX_PIXELS)")
    assert IO.read_image(path, max_pixels=560).rgb.shape == (20, 28, 3)
    monkeypatch.setenv("INSTCOLOR_MAX_PIXELS", "559")
    with pytest.raises(IO.ImageReadError, match="exceeds the limit"):
        IO.read_image(path)
    assert IO.max_pixels_limit() == 559 and IO.max_pixels_limit(7) == 7
    assert IO.read_image(path, max_pixels=600).rgb.shape == (20, 28, 3)  # the argument beats the variable
    for bad in ("abc", "0", "-5", "1.5"):
        monkeypatch.setenv("INSTCOLOR_MAX_PIXELS", bad)
        with pytest.raises(ValueError, match="INSTCOLOR_MAX_PIXELS"):
            IO.read_image(path)
    monkeypatch.delenv("INSTCOLOR_MAX_PIXELS")
    assert IO.max_pixels_limit() == IO.DEFAULT_MAX_PIXELS == 100_000_000
    for bad in (0, -1, 2.5, True, "100"):
        with pytest.raises(ValueError, match="max_pixels"):
            IO.max_pixels_limit(bad)


def test_pillow_limit_is_ours_during_the_call_and_restored(corpus, monkeypatch):
    """A limit above Pillow's global one is honoured; Pillow's global is untouched afterwards."""
    folder, _ = corpus
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # Pillow alone would refuse 560 pixels
    with pytest.raises(Image.DecompressionBombError):
        Image.open(folder / "rgb.png")
    assert IO.read_image(folder / "rgb.png", max_pixels=1000).rgb.shape == (20, 28, 3)
    assert Image.MAX_IMAGE_PIXELS == 100
    with pytest.raises(IO.ImageReadError):
        IO.read_image(folder / "bomb_30000x30000.png")
    assert Image.MAX_IMAGE_PIXELS == 100


def test_pillow_bomb_error_and_warning_become_read_errors(corpus, monkeypatch):
    """Pillow's own checks (frames, tiles) during decoding give the same error, naming the file."""
    from PIL import ImageFile

    folder, _ = corpus
    real_load = ImageFile.ImageFile.load

    def load_warns(self):
        Image._decompression_bomb_check((3000, 3000))  # as Pillow does for an oversized tile or frame
        return real_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", load_warns)
    with pytest.raises(IO.ImageReadError, match=r"rgb\.png: .*9000000 pixels.*--max-pixels"):
        IO.read_image(folder / "rgb.png", max_pixels=5_000_000)  # 9 MP: Pillow warns (> limit)
    with pytest.raises(IO.ImageReadError, match=r"rgb\.png: .*9000000 pixels.*--max-pixels"):
        IO.read_image(folder / "rgb.png", max_pixels=4_000_000)  # Pillow raises (> 2 x limit)
    assert IO.read_image(folder / "rgb.png", max_pixels=10_000_000).rgb.shape == (20, 28, 3)


def test_memory_error_names_the_file(corpus, monkeypatch):
    from PIL import ImageFile

    folder, _ = corpus

    def load_oom(self):
        raise MemoryError()

    monkeypatch.setattr(ImageFile.ImageFile, "load", load_oom)
    with pytest.raises(IO.ImageReadError, match=r"rgb\.png: not enough memory"):
        IO.read_image(folder / "rgb.png")


def test_lossy_colour_files_match_the_picture(corpus):
    """JPEG (YCbCr and Adobe CMYK) decode close to the picture they were made from."""
    folder, _ = corpus
    pattern = C._pattern(20, 28)
    for name in ("rgb.jpg", "ycbcr.jpg", "cmyk.jpg"):
        d = IO.read_image(folder / name)
        assert np.abs(d.rgb.astype(int) - pattern).mean() < 6, name


def test_icc_conversion_changes_pixels(corpus):
    folder, _ = corpus
    d = IO.read_image(folder / "icc_swapped.png")
    with Image.open(folder / "icc_swapped.png") as im:
        assert d.icc == im.info["icc_profile"]
    assert np.abs(d.rgb.astype(int) - C._pattern(16, 24)).max() > 100  # the picture changed


def test_as_rgb_uint8_uses_the_reader(corpus):
    from instcolor.prepare import as_rgb_uint8

    folder, files = corpus
    np.testing.assert_array_equal(as_rgb_uint8(folder / "orient_6.png"), files["orient_6.png"].rgb)
    np.testing.assert_array_equal(as_rgb_uint8(str(folder / "grey16.png")), files["grey16.png"].rgb)
    with pytest.raises(ValueError, match="exceeds the limit"):
        as_rgb_uint8(folder / "bomb_30000x30000.png")
    with pytest.raises(FileNotFoundError, match="absent.png"):
        as_rgb_uint8(folder / "absent.png")


def test_eval_skips_a_pair_with_an_unreadable_image(tmp_path, capsys):
    import argparse

    from instcolor.evaluate import add_eval_parser, evaluate_folders

    pred, gt = tmp_path / "pred", tmp_path / "gt"
    pred.mkdir()
    gt.mkdir()
    for i in range(3):
        img = C._pattern(16, 16, seed=i)
        Image.fromarray(img).save(gt / f"im{i}.png")
        Image.fromarray(img[..., ::-1]).save(pred / f"im{i}.png")
    (pred / "im1.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    res = evaluate_folders(pred, gt, progress=False)
    assert res["count"] == 2 and [r["name"] for r in res["images"]] == ["im0", "im2"]
    assert len(res["errors"]) == 1 and res["errors"][0].startswith(str(pred / "im1.png") + ": ")
    parser = argparse.ArgumentParser()
    add_eval_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["eval", str(pred), str(gt)])
    assert args.func(args) == 1
    err = capsys.readouterr().err
    assert err.count("im1.png") == 1 and "Traceback" not in err
    (pred / "im0.png").write_bytes(b"")
    (pred / "im2.png").write_bytes(b"")
    with pytest.raises(ValueError, match="no image pair could be read"):
        evaluate_folders(pred, gt, progress=False)


# ----------------------------------------------------------------------------- writer
def _smooth(h=48, w=64):
    return C._pattern(h, w)


def test_write_jpeg_quality_and_444(tmp_path):
    from PIL import JpegImagePlugin

    img = _smooth()
    IO.write_image(tmp_path / "hi.jpg", img, format="jpg")
    IO.write_image(tmp_path / "lo.jpg", img, format="jpg", quality=30)
    with Image.open(tmp_path / "hi.jpg") as im:
        assert im.format == "JPEG" and JpegImagePlugin.get_sampling(im) == 0  # 4:4:4
    hi, lo = IO.read_image(tmp_path / "hi.jpg"), IO.read_image(tmp_path / "lo.jpg")
    err_hi = np.abs(hi.rgb.astype(int) - img).mean()
    err_lo = np.abs(lo.rgb.astype(int) - img).mean()
    assert err_hi < 1.5 and err_lo > err_hi
    assert (tmp_path / "lo.jpg").stat().st_size < (tmp_path / "hi.jpg").stat().st_size
    for bad in (0, 101, 2.5, True):
        with pytest.raises(ValueError, match="quality"):
            IO.write_image(tmp_path / "x.jpg", img, format="jpg", quality=bad)


def test_write_png16_round_trip(tmp_path):
    rng = np.random.default_rng(5)
    rgb = rng.integers(0, 65536, (9, 13, 3)).astype(np.uint16)
    alpha = rng.integers(0, 65536, (9, 13)).astype(np.uint16)
    IO.write_image(tmp_path / "a.png", rgb)
    d = IO.read_image(tmp_path / "a.png")
    assert d.bit_depth == 16 and d.alpha is None
    np.testing.assert_array_equal(np.round(d.high * 65535).astype(np.uint16), rgb)
    IO.write_image(tmp_path / "b.png", rgb, alpha=alpha)
    d = IO.read_image(tmp_path / "b.png")
    np.testing.assert_array_equal(np.round(d.high * 65535).astype(np.uint16), rgb)
    np.testing.assert_array_equal(d.alpha, alpha)
    IO.write_image(tmp_path / "c.png", rgb, alpha=np.full((9, 13), 7, np.uint8))  # uint8 alpha widened
    np.testing.assert_array_equal(IO.read_image(tmp_path / "c.png").alpha, np.full((9, 13), 7 * 257, np.uint16))
    with pytest.raises(ValueError, match="16-bit output needs format 'png'"):
        IO.write_image(tmp_path / "d.jpg", rgb, format="jpg")


def test_write_alpha(tmp_path):
    img = _smooth()
    a = (np.arange(48 * 64).reshape(48, 64) % 256).astype(np.uint8)
    IO.write_image(tmp_path / "a.png", img, alpha=a)
    d = IO.read_image(tmp_path / "a.png")
    np.testing.assert_array_equal(d.rgb, img)
    np.testing.assert_array_equal(d.alpha, a)
    IO.write_image(tmp_path / "a.webp", img, format="webp", alpha=a)
    d = IO.read_image(tmp_path / "a.webp")
    assert d.format == "WEBP" and d.alpha is not None and np.abs(d.alpha.astype(int) - a).mean() < 3
    assert np.abs(d.rgb.astype(int) - img).mean() < 3
    IO.write_image(tmp_path / "a.jpg", img, format="jpg", alpha=a)  # dropped
    assert IO.read_image(tmp_path / "a.jpg").alpha is None
    with pytest.raises(ValueError, match="alpha"):
        IO.write_image(tmp_path / "b.png", img, alpha=a[:5])


def test_write_exif_and_srgb_tag(corpus, tmp_path):
    from PIL import ImageCms

    folder, _ = corpus
    d = IO.read_image(folder / "orient_6.jpg")
    for fmt in ("jpg", "png", "webp"):
        out = tmp_path / f"o{IO.SUFFIX_FOR_FORMAT[fmt]}"
        IO.write_image(out, d.rgb, format=fmt, exif=d.exif)
        back = IO.read_image(out)
        assert back.rgb.shape == d.rgb.shape  # stays upright: orientation 1 written
        with Image.open(out) as im:
            ex = im.getexif()
            assert ex.get(0x0112) == 1 and ex.get(0x010F) == "instcolor-test", fmt
            icc = im.info.get("icc_profile")
        desc = ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(icc)))
        assert "sRGB" in desc, fmt
    IO.write_image(tmp_path / "plain.png", d.rgb, icc_srgb=False)
    with Image.open(tmp_path / "plain.png") as im:
        assert "icc_profile" not in im.info and not im.getexif()
    IO.write_image(tmp_path / "p16.png", d.rgb.astype(np.uint16) * 257, exif=d.exif)
    with Image.open(tmp_path / "p16.png") as im:
        assert im.getexif().get(0x010F) == "instcolor-test" and im.info.get("icc_profile")


def test_write_is_atomic_and_validates(tmp_path):
    img = _smooth()
    target = tmp_path / "keep.png"
    target.write_bytes(b"old")
    with pytest.raises(TypeError):
        IO.write_image(target, img.astype(np.float32))
    with pytest.raises(ValueError, match="format"):
        IO.write_image(target, img, format="gif")
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        IO.write_image(target, img[..., :2])
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["keep.png"]
    IO.write_image(target, img)
    np.testing.assert_array_equal(IO.read_image(target).rgb, img)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.png"]


def test_output_format_for():
    assert IO.output_format_for("JPEG") == "jpg" and IO.output_format_for("MPO") == "jpg"
    for f in ("PNG", "TIFF", "GIF", "WEBP", "BMP", ""):
        assert IO.output_format_for(f) == "png"


# ----------------------------------------------------------------------------- 16-bit compose
def test_compose_high_matches_compose_reference_on_8bit():
    from instcolor.compose import compose_high, compose_reference

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (37, 53, 3)).astype(np.uint8)
    ab = (rng.random((2, 16, 16)) - 0.5).astype(np.float32) * 0.8
    hi = compose_high(img / 255.0, ab)
    assert hi.dtype == np.uint16 and hi.shape == (37, 53, 3)
    ref = compose_reference(img, ab)
    assert np.abs(hi.astype(np.float64) / 257 - ref).max() <= 1.0


def test_compose_high_keeps_16bit_lightness():
    """Grey ab: the output is the input's own 16-bit grey, far finer than 8 bits."""
    from instcolor.compose import compose_high

    v = np.linspace(0.05, 0.95, 64 * 64).reshape(64, 64)
    high = np.repeat(v[..., None], 3, axis=2).astype(np.float32)
    out = compose_high(high, np.zeros((2, 8, 8), np.float32))
    err = np.abs(out.astype(np.float64) - v[..., None] * 65535)
    assert err.max() < 20  # 8-bit quantisation alone would be up to 128
    assert len(np.unique(out[..., 1])) > 2000
