"""Inference heads in every backend: class logits on request, SIGGRAPH'17 global hints, cached
instance-net results (``run_heads``, ``run_instances``, ``InstanceState``)."""
import json
import shutil

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx", reason="onnx not installed (pip install 'instcolor[onnx]')")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime not installed (pip install 'instcolor[onnx]')")

from test_tensorrt import OrtHostRunner  # noqa: E402

from instcolor import ops  # noqa: E402
from instcolor.backends import TorchBackend, make_backend  # noqa: E402
from instcolor.backends.onnxruntime_backend import OnnxRuntimeBackend  # noqa: E402
from instcolor.backends.tensorrt_backend import TensorRTBackend  # noqa: E402
from instcolor.export import (FORMAT_V1, MANIFEST, ExportError, export_cache_name, export_segments,  # noqa: E402
                              read_manifest)
from instcolor.global_hints import GlobalHints, stack_vectors  # noqa: E402
from instcolor.models import FusionNet, InstanceNet, SIGGRAPHBackbone, save_official  # noqa: E402
from instcolor.pipeline import Batch, Heads, prepare_image  # noqa: E402
from instcolor.prepare import Hint  # noqa: E402
from instcolor.trt import HostDevice  # noqa: E402

S = 64
WIDTH = 0.25
ATOL = 1e-4  # torch vs ONNX Runtime, as tests/test_export.py
BOXES = [np.zeros((0, 4)), np.array([[0, 0, 30, 30], [10, 5, 50, 39], [20, 10, 55, 38]], np.float64),
         np.array([[5, 5, 40, 30]], np.float64)]


def make_nets(global_hints: bool, seed: int, live_branch: bool = True) -> dict:
    """Random nets at width 0.25; with ``live_branch`` the global branch (its last layer starts at zero)
    gets large random weights, as training would give it some: random nets barely react to conv4_3,
    so the branch is made strong enough that global hints visibly change ab and the logits."""
    torch.manual_seed(seed)
    nets = {"full": SIGGRAPHBackbone(WIDTH, global_hints=global_hints).eval(),
            "instance": InstanceNet(WIDTH, global_hints=global_hints).eval(),
            "fusion": FusionNet(WIDTH, global_hints=global_hints).eval()}
    if global_hints and live_branch:
        with torch.no_grad():
            for k in ("full", "fusion"):
                for conv in nets[k].global_net.model:
                    if isinstance(conv, torch.nn.Conv2d):
                        conv.weight.normal_(0, 20 / conv.in_channels ** 0.5)
    return nets


def images(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (40, 56, 3), dtype=np.uint8) for _ in BOXES]


def prepared(boxes=BOXES, seed=0):
    hints = [(), [Hint(20, 12, rgb=(200, 30, 40), size=3)], ()]
    return [prepare_image(img, b, h, S, ops) for img, b, h in zip(images(seed), boxes, hints)]


def global_vectors(seed=1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    hints = [GlobalHints(histogram=rng.random(529), saturation=0.7), GlobalHints(saturation=0.2),
             GlobalHints(histogram=rng.random(529))]
    return stack_vectors(hints, 3)


@pytest.fixture(scope="module")
def gnets():
    return make_nets(True, seed=11)


@pytest.fixture(scope="module")
def gexport(gnets, tmp_path_factory):
    d = tmp_path_factory.mktemp("heads") / "global"
    export_segments(gnets, d, size=S)
    return d


@pytest.fixture(scope="module")
def torch_g(gnets):
    return TorchBackend(gnets)


@pytest.fixture(scope="module")
def ort_g(gexport):
    return OnnxRuntimeBackend(gexport, threads=1)


@pytest.fixture(scope="module")
def plain_nets():
    return make_nets(False, seed=12)


@pytest.fixture(scope="module")
def plain_export(plain_nets, tmp_path_factory):
    d = tmp_path_factory.mktemp("heads") / "plain"
    export_segments(plain_nets, d, size=S)
    return d


def host_trt(export_dir, max_images=4, **options):
    calls = []
    return TensorRTBackend(export_dir, max_images=max_images, device=HostDevice(), **options,
                           runner_factory=lambda seg, prof: OrtHostRunner(export_dir, seg, prof, calls),
                           fuse=ops.fuse_instances)


def backend(kind, request):
    return request.getfixturevalue({"torch": "torch_g", "onnxruntime": "ort_g"}[kind])


# ----------------------------------------------------------------------------- class head
@pytest.mark.parametrize("with_global", [False, True])
def test_torch_and_onnxruntime_heads_agree(torch_g, ort_g, with_global):
    batch = Batch.stack(prepared(), global_input=global_vectors() if with_global else None)
    t, o = torch_g.run_heads(batch), ort_g.run_heads(batch)
    assert isinstance(t, Heads) and isinstance(o, Heads)
    assert t.ab.shape == o.ab.shape == (3, 2, S, S)
    assert t.logits.shape == o.logits.shape == (3, 529, S // 4, S // 4) and t.logits.dtype == np.float32
    np.testing.assert_allclose(o.ab, t.ab, rtol=0, atol=ATOL)
    np.testing.assert_allclose(o.logits, t.logits, rtol=0, atol=ATOL)
    # the plain image's head is the full net's model_class, the others the fusion net's (on the fused conv8_3)
    assert np.abs(t.logits).max() > 1e-2


def test_logits_of_fused_images_read_the_blended_conv8_3(torch_g, gnets):
    """The fused image's logits are the fusion net's model_class on the blended conv8_3, not on the
    full net's features: compare against fused_heads directly."""
    batch = Batch.stack(prepared())
    plain, fused, inst_image = batch.split()
    with torch.inference_mode():
        _, feats = gnets["instance"](*(torch.from_numpy(a) for a in (batch.crop_L, np.zeros((4, 2, S, S), np.float32),
                                                                      np.full((4, 1, S, S), -0.5, np.float32))))
        _, want = gnets["fusion"].fused_heads(*(torch.from_numpy(batch.__dict__[k][fused]) for k in ("full_L", "hint_ab", "hint_mask")),
                                              feats, [torch.from_numpy(b) for b in batch.box_info], torch.from_numpy(inst_image))
        _, want_plain = gnets["full"].heads(*(torch.from_numpy(batch.__dict__[k][plain]) for k in ("full_L", "hint_ab", "hint_mask")))
    got = torch_g.run_heads(batch).logits
    np.testing.assert_allclose(got[fused], want.numpy(), rtol=0, atol=1e-5)
    np.testing.assert_allclose(got[plain], want_plain.numpy(), rtol=0, atol=1e-5)


@pytest.mark.parametrize("kind", ["torch", "onnxruntime"])
def test_no_logits_asked_equals_run(kind, request):
    be = backend(kind, request)
    for g in (None, global_vectors()):
        batch = Batch.stack(prepared(), global_input=g)
        h = be.run_heads(batch, logits=False)
        assert h.logits is None
        np.testing.assert_array_equal(h.ab, be.run(batch))


def test_torch_run_equals_the_nets_forward(plain_nets):
    """run() for a batch without global hints is what the nets' own forward passes give."""
    be = TorchBackend(plain_nets)
    batch = Batch.stack(prepared())
    plain, fused, inst_image = batch.split()
    t = {k: torch.from_numpy(v) for k, v in dict(A=batch.full_L, B=batch.hint_ab, mask=batch.hint_mask).items()}
    with torch.inference_mode():
        want_plain = plain_nets["full"](t["A"][plain], t["B"][plain], t["mask"][plain])
        _, feats = plain_nets["instance"](torch.from_numpy(batch.crop_L), torch.zeros(4, 2, S, S), torch.full((4, 1, S, S), -0.5))
        want_fused = plain_nets["fusion"](t["A"][fused], t["B"][fused], t["mask"][fused], feats,
                                          [torch.from_numpy(b) for b in batch.box_info], torch.from_numpy(inst_image))
    got = be.run(batch)
    np.testing.assert_allclose(got[plain], want_plain.numpy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(got[fused], want_fused.numpy(), rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------- global hints
@pytest.mark.parametrize("kind", ["torch", "onnxruntime"])
def test_global_hints_change_the_output_zeros_equal_none(kind, request):
    be = backend(kind, request)
    assert be.has_global_hints
    none = be.run_heads(Batch.stack(prepared()))
    zeros = be.run_heads(Batch.stack(prepared(), global_input=np.zeros((3, 532, 1, 1), np.float32)))
    given = be.run_heads(Batch.stack(prepared(), global_input=global_vectors()))
    np.testing.assert_array_equal(zeros.ab, none.ab)
    np.testing.assert_array_equal(zeros.logits, none.logits)
    for i in range(3):  # plain image 0 and fused images 1, 2 all react (same backend: no noise)
        assert np.abs(given.ab[i] - none.ab[i]).max() > 1e-6, i
        assert np.abs(given.logits[i] - none.logits[i]).max() > 1e-3, i
    # one image's hint changes that image only
    g = np.zeros((3, 532, 1, 1), np.float32)
    g[1] = global_vectors()[1]
    one = be.run_heads(Batch.stack(prepared(), global_input=g))
    np.testing.assert_array_equal(one.ab[[0, 2]], none.ab[[0, 2]])
    assert np.abs(one.logits[1] - none.logits[1]).max() > 1e-3


def test_untrained_branch_changes_nothing(tmp_path):
    """A zero-initialised branch (what init-weights gives): global hints are accepted and inert."""
    nets = make_nets(True, seed=13, live_branch=False)
    be = TorchBackend(nets)
    a = be.run(Batch.stack(prepared()))
    b = be.run(Batch.stack(prepared(), global_input=global_vectors()))
    np.testing.assert_array_equal(a, b)


def test_global_hints_refused_without_the_branch(plain_nets, plain_export):
    batch = Batch.stack(prepared(), global_input=global_vectors())
    for be in (TorchBackend(plain_nets), OnnxRuntimeBackend(plain_export, threads=1)):
        assert not be.has_global_hints
        with pytest.raises(ValueError, match="no global hints branch"):
            be.run_heads(batch)
        with pytest.raises(ValueError, match="no global hints branch"):
            be.run(batch)
        be.run(Batch.stack(prepared()))  # without global hints it runs
    assert read_manifest(plain_export)["global_input_segments"] == []


@pytest.mark.parametrize("kind", ["torch", "onnxruntime"])
def test_global_input_shape_checked(kind, request):
    be = backend(kind, request)
    for bad in (np.zeros((2, 532, 1, 1), np.float32), np.zeros((3, 529, 1, 1), np.float32), np.zeros((3, 532)),):
        with pytest.raises(ValueError, match=r"Batch\.global_input: shape"):
            be.run(Batch.stack(prepared(), global_input=bad))


def test_manifest_records_the_global_input(gexport):
    m = read_manifest(gexport)
    assert m["global_input_segments"] == ["full", "fusion.conv4_3"]
    seg = {s["name"]: s for s in m["segments"]}
    assert [i["name"] for i in seg["full"]["inputs"]] == ["A", "B", "mask", "global_input"]
    assert seg["fusion.conv4_3"]["inputs"][-1] == dict(name="global_input", channels=532, level=None)
    assert all("global_input" not in [i["name"] for i in s["inputs"]] for n, s in seg.items()
               if n not in ("full", "fusion.conv4_3"))
    # a manifest claiming other segments take it is refused
    bad = json.loads((gexport / MANIFEST).read_text())
    bad["global_input_segments"] = ["full"]
    d = gexport.parent / "bad_global"
    d.mkdir()
    (d / MANIFEST).write_text(json.dumps(bad))
    with pytest.raises(ExportError, match="inputs must be"):
        read_manifest(d)


# ----------------------------------------------------------------------------- cached instances
@pytest.mark.parametrize("kind", ["torch", "onnxruntime", "tensorrt-host"])
def test_cached_instances_equal_computed(kind, request, gexport):
    be = host_trt(gexport) if kind == "tensorrt-host" else backend(kind, request)
    batch = Batch.stack(prepared(), global_input=global_vectors())
    state = be.run_instances(batch.crop_L)
    assert len(state) == 4
    want = be.run_heads(batch)
    cached = Batch(**{**batch.__dict__, "crop_L": np.zeros((0, 1, S, S), np.float32)})  # crops are not read
    for _ in range(2):  # the state is reusable
        got = be.run_heads(cached, instances=state)
        np.testing.assert_array_equal(got.ab, want.ab)
        np.testing.assert_array_equal(got.logits, want.logits)


@pytest.mark.parametrize("kind", ["torch", "onnxruntime", "tensorrt-host"])
def test_selected_instances_equal_running_those_boxes(kind, request, gexport):
    """Excluding a box through state.select equals preparing the image without that box."""
    be = host_trt(gexport) if kind == "tensorrt-host" else backend(kind, request)
    state = be.run_instances(Batch.stack(prepared()).crop_L)  # image 1: boxes 0,1,2 -> instances 0,1,2; image 2: 3
    for keep_boxes, keep in (([2, 0], [2, 0, 3]),):  # box 1 excluded, the others reordered
        boxes = [BOXES[0], BOXES[1][keep_boxes], BOXES[2]]
        batch = Batch.stack(prepared(boxes), global_input=global_vectors())
        want = be.run_heads(batch)
        got = be.run_heads(batch, instances=state.select(keep))
        np.testing.assert_allclose(got.ab, want.ab, rtol=0, atol=1e-6)
        np.testing.assert_allclose(got.logits, want.logits, rtol=0, atol=1e-6)
    # all boxes of image 1 excluded: it takes the full-image path
    boxes = [BOXES[0], BOXES[1][:0], BOXES[2]]
    batch = Batch.stack(prepared(boxes))
    np.testing.assert_allclose(be.run_heads(batch, instances=state.select([3])).ab, be.run(batch), rtol=0, atol=1e-6)
    # no instance at all
    batch = Batch.stack(prepared([BOXES[0], BOXES[0], BOXES[0]]))
    np.testing.assert_array_equal(be.run_heads(batch, instances=state.select([])).ab, be.run(batch))


def test_instance_state_mismatch_is_refused(torch_g, ort_g):
    batch = Batch.stack(prepared())
    state = torch_g.run_instances(batch.crop_L)
    with pytest.raises(ValueError, match="holds 3 instances but the batch has 4"):
        torch_g.run_heads(batch, instances=state.select([0, 1, 2]))
    with pytest.raises(ValueError, match="another backend"):
        ort_g.run_heads(batch, instances=state)
    small = Batch.stack([prepare_image(img, b, (), 32, ops) for img, b in zip(images(), BOXES)])
    with pytest.raises(ValueError, match="computed at size 64 but the batch is at size 32"):
        torch_g.run_heads(small, instances=state)
    with pytest.raises(IndexError, match="index 4 out of range 0..3"):
        state.select([0, 4])
    with pytest.raises(TypeError, match="boolean mask"):
        state.select(np.ones(4, bool))
    with pytest.raises(ValueError, match=r"crop_L: expected \(M, 1, S, S\)"):
        torch_g.run_instances(np.zeros((2, 64, 64), np.float32))
    assert len(state.select([3, 0])) == 2 and len(torch_g.run_instances(np.zeros((0, 1, S, S), np.float32))) == 0


# ----------------------------------------------------------------------------- TensorRT orchestration (host)
def test_tensorrt_orchestration_heads_in_chunks(gexport, ort_g):
    """The TensorRT backend's loop + buffers (host stand-ins): heads, global hints and a cached state
    over a batch that runs in chunks of 2 images."""
    be = host_trt(gexport, max_images=2)
    ps = prepared() + prepared(seed=3)[::-1]  # 6 images: chunks [0,1] [2,3] [4,5]
    g = np.concatenate([global_vectors(), global_vectors(seed=5)])
    batch = Batch.stack(ps, global_input=g)
    want = ort_g.run_heads(batch)
    got = be.run_heads(batch)
    np.testing.assert_allclose(got.ab, want.ab, rtol=0, atol=2e-5)
    np.testing.assert_allclose(got.logits, want.logits, rtol=0, atol=2e-5)
    state = be.run_instances(batch.crop_L)
    again = be.run_heads(batch, instances=state)
    np.testing.assert_array_equal(again.ab, got.ab)
    np.testing.assert_array_equal(again.logits, got.logits)
    np.testing.assert_array_equal(be.run(batch), got.ab)
    # the instance engine takes at most max_images * max_instances_per_image crops: 8 crops in chunks of 3
    small = host_trt(gexport, max_images=1, max_instances_per_image=3)
    chunked = small.run_instances(batch.crop_L)
    assert len(chunked) == 8 and chunked.features["conv1_2"].shape[0] == 8
    for k in state.features:
        np.testing.assert_allclose(chunked.features[k], state.features[k], rtol=0, atol=1e-6, err_msg=k)
        np.testing.assert_allclose(chunked.logits[k], state.logits[k], rtol=0, atol=1e-6, err_msg=k)
    np.testing.assert_array_equal(small.run_heads(batch, logits=False, instances=chunked).ab, small.run(batch))


# ----------------------------------------------------------------------------- exports of the earlier format
def _as_format_v1(src, dst):
    """What an instcolor-segments/1 export looked like: no head segments, ``full`` -> ab only, no global input."""
    shutil.copytree(src, dst)
    m = json.loads((dst / MANIFEST).read_text())
    assert m["global_input_segments"] == []
    model = onnx.load(str(dst / "full.onnx"))
    del model.graph.output[1:]
    onnx.save(model, str(dst / "full.onnx"))
    for name in ("head.full", "head.fusion"):
        (dst / f"{name}.onnx").unlink()
    m["segments"] = [s for s in m["segments"] if not s["name"].startswith("head.")]
    m["segments"][0]["outputs"] = ["ab"]
    m["format"] = FORMAT_V1
    del m["global_input_segments"], m["num_classes"]
    (dst / MANIFEST).write_text(json.dumps(m))
    return dst


def test_format_v1_export_runs_but_has_no_logits(plain_export, tmp_path):
    old_dir = _as_format_v1(plain_export, tmp_path / "old")
    old, new = OnnxRuntimeBackend(old_dir, threads=1), OnnxRuntimeBackend(plain_export, threads=1)
    batch = Batch.stack(prepared())
    np.testing.assert_allclose(old.run(batch), new.run(batch), rtol=0, atol=1e-6)
    assert old.run_heads(batch, logits=False).logits is None
    with pytest.raises(ValueError, match=rf"{old_dir}.*no classification head.*export the weights again"):
        old.run_heads(batch)
    with pytest.raises(ValueError, match="no global hints"):
        old.run(Batch.stack(prepared(), global_input=global_vectors()))
    state = old.run_instances(batch.crop_L)
    np.testing.assert_array_equal(old.run_heads(batch, logits=False, instances=state).ab, old.run(batch))
    # the v1 layout is checked as strictly as before: head segments in a v1 manifest are refused
    m = json.loads((plain_export / MANIFEST).read_text())
    m["format"] = FORMAT_V1
    (old_dir / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(ExportError, match="unexpected segments"):
        read_manifest(old_dir)


def test_cached_export_of_the_earlier_format_is_not_reused(plain_nets, plain_export, tmp_path, monkeypatch):
    """make_backend exports into the cache under a name that carries the export format, so an
    export of the earlier format (cached under the old name) is not picked up."""
    from instcolor.export import weights_hash

    monkeypatch.setenv("INSTCOLOR_CACHE", str(tmp_path / "cache"))
    weights = tmp_path / "w"
    save_official(weights, plain_nets, fusion_prefix=True)
    from instcolor.models import load_nets

    nets = load_nets(weights)
    old_name = f"{weights_hash(nets)[:20]}-fp32"  # the name before the format was part of it
    _as_format_v1(plain_export, tmp_path / "cache" / "onnx" / old_name)
    assert export_cache_name(nets, "fp32") != old_name
    be = make_backend(weights, backend="onnxruntime")
    assert be.export_dir.name == export_cache_name(nets, "fp32") and be.has_class_head
    assert be.run_heads(Batch.stack(prepared())).logits.shape == (3, 529, S // 4, S // 4)


@pytest.mark.parametrize("shape", [(1, 529, 16, 16), (2, 529, 7, 5)])
@pytest.mark.parametrize("temperature", [0.2, 0.38, 1.0, 5.0])
def test_annealed_mean_is_the_softmax_weighted_mean_of_the_bin_centres(shape, temperature):
    """The one-matrix-product form equals Zhang et al.'s Eq. 5 written out: softmax(z / T) over the
    529 bins, then the probability-weighted mean of the bin centres."""
    from instcolor.distribution import annealed_mean, bin_centers, softmax

    z = (np.random.default_rng(7).standard_normal(shape) * 4).astype(np.float32)
    want = np.einsum("nkhw,kc->nchw", softmax(z, temperature, axis=1).astype(np.float64), bin_centers())
    got = annealed_mean(z, temperature)
    assert got.shape == (shape[0], 2) + shape[2:] and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
