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
