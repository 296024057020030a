"""Decoding (regression / distribution) and global hints through the public API and the CLI.

Random nets only: the numbers are checked against the backend's own heads and instcolor.distribution,
not against trained quality."""
import numpy as np
import pytest
import torch
from PIL import Image

from conftest import tiny_nets
from instcolor import Colorizer, GlobalHints, Hint
from instcolor import colorizer as colorizer_module
from instcolor.backends import TorchBackend
from instcolor.distribution import DEFAULT_MIX, DEFAULT_TEMPERATURE, annealed_mean, upsample_ab
from instcolor.models import FusionNet, InstanceNet, SIGGRAPHBackbone, save_official
from instcolor.pipeline import Batch, compose_result, prepare_image
from instcolor.prepare import select_boxes

S = 64
BOXES = [[5, 5, 40, 30], [20, 10, 60, 45]]
HINTS = [Hint(12, 30, rgb=(30, 90, 200), size=3)]


def global_nets(width=0.125, seed=0):
    """Random nets with the global hints branch, its last layer made non-zero so that it acts. Random
    nets shrink a signal about tenfold per block; the BatchNorm scales of blocks 5-9 are raised so that
    what the branch adds at conv4_3 still shows in the output (~1e-3 instead of ~1e-8)."""
    torch.manual_seed(seed)
    nets = {"full": SIGGRAPHBackbone(width, global_hints=True).eval(), "instance": InstanceNet(width).eval(),
            "fusion": FusionNet(width, global_hints=True).eval()}
    with torch.no_grad():
        for kind in ("full", "fusion"):
            last = nets[kind].global_net.model[-1]
            torch.nn.init.normal_(last.weight, std=0.5)
            torch.nn.init.normal_(last.bias, std=0.5)
        for net in nets.values():
            for block in ("model5", "model6", "model7", "model8", "model9"):
                getattr(net, block)[-1].weight.fill_(20.0)
    return nets


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(1).integers(0, 256, (50, 70, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def plain():
    """Random nets without the global hints branch, torch backend."""
    return Colorizer(TorchBackend(tiny_nets(seed=1)), default_size=S, weights="the test nets")


@pytest.fixture(scope="module")
def branched():
    return Colorizer(TorchBackend(global_nets()), default_size=S)


def _heads(c, img, boxes, hints=(), g=None):
    sel = select_boxes(boxes, None, img.shape[:2])
    p = prepare_image(img, sel, hints, S, c.ops)
    return p, c.backend.run_heads(Batch.stack([p], global_input=g), logits=True)


# ----------------------------------------------------------------------------- decoding
@pytest.mark.parametrize("boxes", [[], BOXES])
def test_distribution_decoding_is_the_annealed_mean_of_the_class_head(plain, image, boxes):
    r = plain.colorize(image, boxes=boxes, hints=HINTS, decode="distribution", temperature=0.5)
    p, heads = _heads(plain, image, boxes, HINTS)
    want = upsample_ab(annealed_mean(heads.logits, 0.5), S)[0]
    np.testing.assert_array_equal(r.ab, want)
    expected = compose_result(p, want, ops=plain.ops)                  # composed like the regression ab
    np.testing.assert_array_equal(r.rgb, expected.rgb)
    np.testing.assert_array_equal(r.rgb_processed, expected.rgb_processed)
    assert not np.allclose(r.ab, heads.ab[0], atol=1e-3)               # not the regression output
    reg = plain.colorize(image, boxes=boxes, hints=HINTS)              # the default stays regression
    np.testing.assert_array_equal(reg.ab, heads.ab[0])


@pytest.mark.parametrize("boxes", [[], BOXES])
def test_mixed_decoding_blends_regression_and_annealed_mean(plain, image, boxes):
    p, heads = _heads(plain, image, boxes, HINTS)
    dist = upsample_ab(annealed_mean(heads.logits, 0.5), S)[0]
    own = Colorizer(plain.backend, default_size=S, decode="mixed", temperature=0.5, mix=0.25)
    r = own.colorize(image, boxes=boxes, hints=HINTS)
    np.testing.assert_allclose(r.ab, 0.75 * heads.ab[0] + 0.25 * dist, rtol=0, atol=1e-6)
    assert r.ab.dtype == np.float32
    np.testing.assert_array_equal(r.rgb, compose_result(p, r.ab, ops=plain.ops).rgb)
    ends = Colorizer(plain.backend, default_size=S, temperature=0.5, mix=0.0)
    np.testing.assert_array_equal(ends.colorize(image, boxes=boxes, hints=HINTS, decode="mixed").ab, heads.ab[0])
    ends.mix = 1.0
    np.testing.assert_array_equal(ends.colorize(image, boxes=boxes, hints=HINTS, decode="mixed").ab, dist)
    assert Colorizer(plain.backend).mix == DEFAULT_MIX == 0.35
    for bad in (-0.1, 1.5, "half", float("nan")):
        with pytest.raises(ValueError, match="mix"):
            Colorizer(plain.backend, mix=bad)


def test_temperature_default_and_overrides(plain, image):
    a = plain.colorize(image, decode="distribution")
    b = plain.colorize(image, decode="distribution", temperature=DEFAULT_TEMPERATURE)
    c = plain.colorize(image, decode="distribution", temperature=2.0)
    np.testing.assert_array_equal(a.ab, b.ab)
    assert np.abs(a.ab - c.ab).max() > 1e-3
    own = Colorizer(plain.backend, default_size=S, decode="distribution", temperature=2.0)
    assert (own.decode, own.temperature) == ("distribution", 2.0)
    np.testing.assert_array_equal(own.colorize(image).ab, c.ab)        # stored defaults are used
    np.testing.assert_array_equal(own.colorize(image, decode="regression").ab, plain.colorize(image).ab)


def test_default_decode_lives_in_one_constant(plain, monkeypatch):
    assert colorizer_module.DEFAULT_DECODE == "regression"
    assert Colorizer(plain.backend).decode == "regression"
    assert Colorizer(plain.backend).temperature == DEFAULT_TEMPERATURE == 0.38
    monkeypatch.setattr(colorizer_module, "DEFAULT_DECODE", "distribution")
    assert Colorizer(plain.backend).decode == "distribution"


def test_from_pretrained_decode_options(tiny_weights_dir, image):
    c = Colorizer.from_pretrained(tiny_weights_dir, backend="torch", decode="distribution", temperature=0.7)
    assert (c.decode, c.temperature) == ("distribution", 0.7)
    ref = Colorizer.from_pretrained(tiny_weights_dir, backend="torch")
    assert (ref.decode, ref.temperature) == ("regression", DEFAULT_TEMPERATURE)
    np.testing.assert_array_equal(c.colorize(image, size=S).ab,
                                  ref.colorize(image, size=S, decode="distribution", temperature=0.7).ab)


@pytest.mark.parametrize("kwargs, match", [
    (dict(decode="annealed"), "decode must be one of"), (dict(decode=1), "decode must be one of"),
    (dict(temperature=0), "temperature"), (dict(temperature=-1), "temperature"),
    (dict(temperature=11), "temperature"), (dict(temperature="warm"), "temperature"),
    (dict(temperature=float("nan")), "temperature")])
def test_bad_decode_values_are_one_clear_error(plain, image, tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        plain.colorize(image, **kwargs)
    with pytest.raises(ValueError, match=match):
        plain.colorize_batch([image], **kwargs)
    with pytest.raises(ValueError, match=match):
        Colorizer(plain.backend, **kwargs)
    with pytest.raises(ValueError, match=match):  # checked before the weights are even looked for
        Colorizer.from_pretrained(tmp_path / "no-such-weights", backend="torch", **kwargs)


def test_batch_decoding_equals_one_at_a_time(plain, image):
    other = image[::-1, ::-1].copy()
    batch = plain.colorize_batch([image, other], boxes=[BOXES, None], decode="distribution", temperature=0.6)
    for r, img, b in zip(batch, [image, other], [BOXES, None]):
        np.testing.assert_allclose(r.ab, plain.colorize(img, boxes=b, decode="distribution", temperature=0.6).ab,
                                   atol=1e-6)


# ----------------------------------------------------------------------------- global hints
@pytest.mark.parametrize("boxes", [[], BOXES])
def test_global_hints_reach_the_nets(branched, image, boxes):
    g = GlobalHints.from_image(image[:, ::-1], saturation=0.8)
    r = branched.colorize(image, boxes=boxes, hints=HINTS, global_hints=g)
    _, heads = _heads(branched, image, boxes, HINTS, g.vector().reshape(1, -1, 1, 1))
    np.testing.assert_array_equal(r.ab, heads.ab[0])
    auto = branched.colorize(image, boxes=boxes, hints=HINTS)
    assert np.abs(r.ab - auto.ab).max() > 1e-4                         # the branch acts
    sat = branched.colorize(image, boxes=boxes, hints=HINTS, global_hints=GlobalHints(saturation=0.1))
    assert np.abs(sat.ab - r.ab).max() > 1e-4 and np.abs(sat.ab - auto.ab).max() > 1e-4
    empty = branched.colorize(image, boxes=boxes, hints=HINTS, global_hints=GlobalHints())
    np.testing.assert_array_equal(empty.ab, auto.ab)                   # nothing given = automatic
    dist = branched.colorize(image, boxes=boxes, global_hints=g, decode="distribution")
    _, heads = _heads(branched, image, boxes, (), g.vector().reshape(1, -1, 1, 1))
    np.testing.assert_array_equal(dist.ab, upsample_ab(annealed_mean(heads.logits, DEFAULT_TEMPERATURE), S)[0])


def test_zero_initialised_branch_changes_nothing(image):
    """A fresh (zero last layer) branch given global hints equals the nets without the branch."""
    torch.manual_seed(4)
    nets = {"full": SIGGRAPHBackbone(0.125, global_hints=True).eval(), "instance": InstanceNet(0.125).eval(),
            "fusion": FusionNet(0.125, global_hints=True).eval()}
    c = Colorizer(TorchBackend(nets), default_size=S)
    g = GlobalHints.from_image(image, saturation=0.5)
    for boxes in ([], BOXES):
        np.testing.assert_array_equal(c.colorize(image, boxes=boxes, global_hints=g).ab,
                                      c.colorize(image, boxes=boxes).ab)


def test_batch_global_hints_are_per_image(branched, image):
    g = GlobalHints(saturation=0.9)
    out = branched.colorize_batch([image, image], boxes=[BOXES, BOXES], global_hints=[g, None])
    np.testing.assert_allclose(out[0].ab, branched.colorize(image, boxes=BOXES, global_hints=g).ab, atol=1e-6)
    np.testing.assert_allclose(out[1].ab, branched.colorize(image, boxes=BOXES).ab, atol=1e-6)
    both = branched.colorize_batch([image, image], global_hints=g)      # one GlobalHints: every image
    np.testing.assert_allclose(both[1].ab, branched.colorize(image, global_hints=g).ab, atol=1e-6)
    with pytest.raises(ValueError, match="global_hints"):
        branched.colorize_batch([image, image], global_hints=[g])


def test_global_hints_without_the_branch_name_the_weights(plain, tiny_weights_dir, image):
    with pytest.raises(ValueError, match="the test nets have no global hints branch"):
        plain.colorize(image, global_hints=GlobalHints(saturation=0.5))
    c = Colorizer.from_pretrained(tiny_weights_dir, backend="torch")
    with pytest.raises(ValueError, match=f"{tiny_weights_dir.name}.*no global hints branch"):
        c.colorize(image, global_hints=GlobalHints.from_image(image))
    with pytest.raises(TypeError, match="GlobalHints"):
        plain.colorize(image, global_hints={"saturation": 0.5})


def test_capabilities_of_a_backend_without_heads(plain, image):
    class RunOnly:
        name = "runonly"

        def run(self, batch):
            return plain.backend.run(batch)

    c = Colorizer(RunOnly(), default_size=S)
    np.testing.assert_array_equal(c.colorize(image, boxes=BOXES).ab, plain.colorize(image, boxes=BOXES).ab)
    for kwargs, what in ((dict(decode="distribution"), "distribution decoding"),
                         (dict(global_hints=GlobalHints(saturation=0.3)), "global hints")):
        with pytest.raises(ValueError, match=f"{what}: the runonly backend"):
            c.colorize(image, **kwargs)
    with pytest.raises(ValueError, match="colour suggestions: the runonly backend"):
        c.suggest_colors(image, 3, 3)


# ----------------------------------------------------------------------------- CLI
@pytest.fixture(scope="module")
def branched_weights(tmp_path_factory):
    d = tmp_path_factory.mktemp("global_weights")
    save_official(d, global_nets(seed=2))
    return d


def _run_cli(args):
    from instcolor.cli import main

    return main(["colorize", *map(str, args)])


def test_cli_decode_and_temperature(tmp_path, tiny_weights_dir, image):
    src = tmp_path / "in.png"
    Image.fromarray(image).save(src)
    rc = _run_cli([src, "-o", tmp_path / "out", "--weights", tiny_weights_dir, "--backend", "torch", "--size", S,
                   "--decode", "distribution", "--temperature", "0.6"])
    assert rc == 0
    c = Colorizer.from_pretrained(tiny_weights_dir, backend="torch")
    want = c.colorize(image, size=S, boxes=[], decode="distribution", temperature=0.6).rgb
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out" / "in.png")), want)
    assert not np.array_equal(want, c.colorize(image, size=S, boxes=[]).rgb)
    rc = _run_cli([src, "-o", tmp_path / "mixed", "--weights", tiny_weights_dir, "--backend", "torch", "--size", S,
                   "--decode", "mixed", "--temperature", "0.6", "--mix", "0.4"])
    assert rc == 0
    m = Colorizer.from_pretrained(tiny_weights_dir, backend="torch", mix=0.4)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "mixed" / "in.png")),
                                  m.colorize(image, size=S, boxes=[], decode="mixed", temperature=0.6).rgb)


def test_cli_reference_and_saturation(tmp_path, branched_weights, image):
    src, ref = tmp_path / "in.png", tmp_path / "ref.png"
    Image.fromarray(image).save(src)
    Image.fromarray(np.roll(image, 20, axis=2)).save(ref)
    rc = _run_cli([src, "-o", tmp_path / "out", "--weights", branched_weights, "--backend", "torch", "--size", S,
                   "--reference", ref, "--saturation", "0.3"])
    assert rc == 0
    c = Colorizer.from_pretrained(branched_weights, backend="torch")
    assert c.has_global_hints
    want = c.colorize(image, size=S, boxes=[], global_hints=GlobalHints.from_image(ref, saturation=0.3)).rgb
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out" / "in.png")), want)
    assert not np.array_equal(want, c.colorize(image, size=S, boxes=[]).rgb)
    rc = _run_cli([src, "-o", tmp_path / "out2", "--weights", branched_weights, "--backend", "torch", "--size", S,
                   "--saturation", "0.3"])
    assert rc == 0
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out2" / "in.png")),
                                  c.colorize(image, size=S, boxes=[], global_hints=GlobalHints(saturation=0.3)).rgb)


@pytest.mark.parametrize("extra, match", [
    (["--temperature", "0"], "--temperature"), (["--saturation", "1.5"], "--saturation"),
    (["--decode", "mixed", "--mix", "1.5"], "--mix"),
    (["--reference", "missing.jpg"], "missing.jpg"), (["--saturation", "0.5"], "no global hints branch")])
def test_cli_bad_options_are_one_line(tmp_path, tiny_weights_dir, image, capsys, extra, match):
    src = tmp_path / "in.png"
    Image.fromarray(image).save(src)
    rc = _run_cli([src, "-o", tmp_path / "out", "--weights", tiny_weights_dir, "--backend", "torch", *extra])
    err = capsys.readouterr().err
    assert rc == 2 and match in err and "Traceback" not in err
    assert not (tmp_path / "out" / "in.png").exists()


def test_recommended_decoding_from_bundle_info(tmp_path):
    """A bundle's info.decode is the default when the caller leaves decoding open; an explicit decode
    of another kind gets the library default temperature; folders without it decode by regression."""
    import json

    from instcolor.colorizer import DEFAULT_DECODE, recommended_decoding
    b = tmp_path / "b"
    b.mkdir()
    (b / "config.json").write_text(json.dumps({"info": {"decode": {"decode": "distribution", "temperature": 0.2}}}))
    assert recommended_decoding(b) == ("distribution", 0.2, DEFAULT_MIX)
    assert recommended_decoding(b, temperature=0.5) == ("distribution", 0.5, DEFAULT_MIX)
    assert recommended_decoding(b, decode="regression") == ("regression", DEFAULT_TEMPERATURE, DEFAULT_MIX)
    assert recommended_decoding(b, decode="distribution") == ("distribution", 0.2, DEFAULT_MIX)
    (b / "config.json").write_text(json.dumps({"info": {"decode": {"decode": "mixed", "temperature": 0.5, "mix": 0.25}}}))
    assert recommended_decoding(b) == ("mixed", 0.5, 0.25)
    assert recommended_decoding(b, mix=0.75) == ("mixed", 0.5, 0.75)
    assert recommended_decoding(b, decode="distribution") == ("distribution", DEFAULT_TEMPERATURE, DEFAULT_MIX)
    (b / "config.json").write_text(json.dumps({"info": {"decode": {"decode": "mixed", "mix": 1.5}}}))
    assert recommended_decoding(b) == ("regression", DEFAULT_TEMPERATURE, DEFAULT_MIX)  # a bad recommendation is ignored
    assert recommended_decoding(tmp_path) == (DEFAULT_DECODE, DEFAULT_TEMPERATURE, DEFAULT_MIX)
    (b / "config.json").write_text(json.dumps({"info": {"decode": {"decode": "magic"}}}))
    assert recommended_decoding(b) == (DEFAULT_DECODE, DEFAULT_TEMPERATURE, DEFAULT_MIX)   # a bad recommendation is ignored
    with pytest.raises(ValueError, match="decode"):
        recommended_decoding(b, decode="magic")
