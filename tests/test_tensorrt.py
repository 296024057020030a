"""TensorRT backend.

Without TensorRT / a GPU (as in CI) the backend's own orchestration and buffer code runs with a host
engine runner backed by ONNX Runtime and :class:`instcolor.trt.memory.HostDevice`, and is checked
against the ONNX Runtime backend. Planning (profiles, buffers, cache keys, build modes) is pure and
tested directly. Tests that need TensorRT and a GPU are at the end; they skip here.
"""
import json

import numpy as np
import pytest

from conftest import tiny_nets
from trt_sim import SimCudart, host_view, sim_tensorrt

onnx = pytest.importorskip("onnx", reason="onnx not installed (pip install 'instcolor[onnx]')")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime not installed (pip install 'instcolor[onnx]')")

from instcolor import ops  # noqa: E402
from instcolor.backends.onnxruntime_backend import OnnxRuntimeBackend  # noqa: E402
from instcolor.backends.segments import split_batch  # noqa: E402
from instcolor.backends.tensorrt_backend import (TensorRTBackend, parse_device,  # noqa: E402
                                                 tensorrt_unavailable_reason)
from instcolor.export import FORMAT, export_segments  # noqa: E402
from instcolor.pipeline import Batch, prepare_image  # noqa: E402
from instcolor.prepare import Hint  # noqa: E402
from instcolor.trt import (MAX_INSTANCES_PER_IMAGE, HostDevice, build_mode, engine_cache_key,  # noqa: E402
                           io_dtype, plan_buffers, plan_profiles, tensor_shapes)
from instcolor.trt.cache import engine_path, load_engine, store_engine, write_atomic  # noqa: E402
from instcolor.trt.cuda import CudaArray  # noqa: E402

S = 32
TRT_REASON = tensorrt_unavailable_reason(0)
NEEDS_TRT = pytest.mark.skipif(bool(TRT_REASON), reason=f"needs TensorRT and a GPU: {TRT_REASON}")


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def nets():
    return tiny_nets(seed=3)


@pytest.fixture(scope="module")
def export32(nets, tmp_path_factory):
    d = tmp_path_factory.mktemp("trt_export") / "fp32"
    return d, export_segments(nets, d, size=S)


@pytest.fixture(scope="module")
def export16(nets, tmp_path_factory):
    d = tmp_path_factory.mktemp("trt_export") / "fp16"
    return d, export_segments(nets, d, precision="fp16", size=S)


@pytest.fixture(scope="module")
def ort_backend(export32):
    return OnnxRuntimeBackend(export32[0], threads=1)


class OrtHostRunner:
    """EngineRunner on host numpy arrays, backed by ONNX Runtime. Checks what a TensorRT engine would
    check: input shapes inside the profile, output views of the exact shape and dtype."""

    def __init__(self, export_dir, segment, profile, calls):
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        self.name, self.profile, self.calls = segment["name"], profile, calls
        self.session = ort.InferenceSession(str(export_dir / segment["file"]), so, providers=["CPUExecutionProvider"])
        self.outputs = list(segment["outputs"])

    def run(self, inputs, outputs, stream):
        assert stream == 0
        assert set(inputs) == set(self.profile) and list(outputs) == self.outputs
        for name, a in inputs.items():
            lo, _, hi = self.profile[name]
            assert isinstance(a, np.ndarray) and a.flags.c_contiguous, name
            assert all(l <= s <= h for l, s, h in zip(lo, a.shape, hi)), (self.name, name, a.shape, lo, hi)
        results = self.session.run(self.outputs, dict(inputs))
        for name, r in zip(self.outputs, results):
            assert outputs[name].shape == r.shape and outputs[name].dtype == r.dtype, (self.name, name)
            np.copyto(outputs[name], r)
        self.calls.append((self.name, {k: v.shape for k, v in inputs.items()}))


def host_backend(export_dir, precision="fp32", max_images=4, fuse=None, calls=None):
    calls = [] if calls is None else calls
    return TensorRTBackend(export_dir, precision=precision, max_images=max_images, device=HostDevice(),
                           runner_factory=lambda seg, prof: OrtHostRunner(export_dir, seg, prof, calls),
                           fuse=fuse or ops.fuse_instances)


def make_batch(counts, seed=0, size=S):
    """Prepared images (random sizes), ``counts[i]`` random boxes on image i, hints on some."""
    rng = np.random.default_rng(seed)
    prepared = []
    for i, c in enumerate(counts):
        h, w = int(rng.integers(24, 70)), int(rng.integers(24, 70))
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        boxes = []
        for _ in range(c):
            x0, y0 = int(rng.integers(0, w - 4)), int(rng.integers(0, h - 4))
            boxes.append([x0, y0, int(rng.integers(x0 + 2, w + 1)), int(rng.integers(y0 + 2, h + 1))])
        boxes = np.array(boxes, np.float64).reshape(-1, 4)
        hints = [Hint(w / 2, h / 3, rgb=(200, 30, 40), size=3)] if i % 2 else ()
        prepared.append(prepare_image(img, boxes, hints, size, ops))
    return Batch.stack(prepared)


# ----------------------------------------------------------------------------- orchestration on the host
@pytest.mark.parametrize("counts", [[0], [1], [5], [3, 0, 8], [0, 0], [2, 1, 0, 4]],
                         ids=["no-box", "one", "five", "mixed", "two-plain", "four-mixed"])
def test_host_runner_reproduces_onnxruntime_backend(export32, ort_backend, counts):
    """The TensorRT backend's orchestration + buffers (host stand-ins) give the ORT backend's ab."""
    batch = make_batch(counts, seed=len(counts) * 10 + sum(counts))
    want = ort_backend.run(batch)
    got = host_backend(export32[0]).run(batch)
    assert got.shape == want.shape == (len(counts), 2, S, S) and got.dtype == np.float32
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-5)


def test_buffers_allocated_once_and_reused(export32, ort_backend):
    calls = []
    be = host_backend(export32[0], max_images=3, calls=calls)
    first = make_batch([8, 8, 8], seed=1)  # the largest batch of the profile
    np.testing.assert_allclose(be.run(first), ort_backend.run(first), rtol=0, atol=2e-5)
    allocated = be.device.allocated
    assert allocated == be.sets[S].plan.total_bytes
    for counts, seed in (([1], 2), ([0, 2], 3), ([3, 0, 1], 4), ([0], 5)):
        b = make_batch(counts, seed=seed)
        np.testing.assert_allclose(be.run(b), ort_backend.run(b), rtol=0, atol=2e-5)
    assert be.device.allocated == allocated and list(be.sets) == [S]
    # instance segment ran with m = 24, then 1, 2, 4
    assert [c[1]["A"][0] for c in calls if c[0] == "instance"] == [24, 1, 2, 4]


def test_batches_larger_than_max_images_run_in_chunks(export32, ort_backend):
    counts = [2, 0, 8, 1, 0]
    batch = make_batch(counts, seed=7)
    parts = split_batch(batch, 2)
    assert [p.full_L.shape[0] for p in parts] == [2, 2, 1]
    assert [len(p.inst_image) for p in parts] == [2, 9, 0]
    assert parts[1].inst_image.tolist() == [0] * 8 + [1]
    calls = []
    got = host_backend(export32[0], max_images=2, calls=calls).run(batch)
    np.testing.assert_allclose(got, ort_backend.run(batch), rtol=0, atol=2e-5)
    assert max(next(iter(shapes.values()))[0] for name, shapes in calls if name != "instance") <= 2


def test_through_colorizer(export32):
    from instcolor import Colorizer

    rng = np.random.default_rng(4)
    imgs = [rng.integers(0, 256, (40, 56, 3), dtype=np.uint8), rng.integers(0, 256, (33, 20, 3), dtype=np.uint8)]
    boxes = [[[0, 0, 30, 30], [10, 5, 50, 39]], []]
    a = Colorizer(OnnxRuntimeBackend(export32[0])).colorize_batch(imgs, boxes, size=S)
    b = Colorizer(host_backend(export32[0], max_images=1)).colorize_batch(imgs, boxes, size=S)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x.ab, y.ab, rtol=0, atol=2e-5)


def test_fp16_export_io_in_half(export16, ort_backend):
    """Strongly typed fp16 engines take and give float16: buffers, casts on upload/download."""
    import torch

    from instcolor.fuse import fuse_instances_reference

    def fuse_half(bg, bl, fi, li, info, img, *, out, stream=None):  # the CUDA kernel's fp16 contract, on the host
        t = [torch.from_numpy(np.asarray(a, np.float32)) for a in (bg, bl, fi, li)]
        np.copyto(out, fuse_instances_reference(*t, torch.from_numpy(info), torch.from_numpy(img)).numpy(),
                  casting="same_kind")
        return out

    be = host_backend(export16[0], precision="fp16", fuse=fuse_half)
    assert be.dtype == np.float16 and be.engine_set(S).plan.dtype == np.float16
    batch = make_batch([3, 0, 1], seed=9)
    got = be.run(batch)
    assert got.dtype == np.float32 and np.isfinite(got).all()
    np.testing.assert_allclose(got, ort_backend.run(batch), rtol=0, atol=3e-2)
    with pytest.raises(ValueError, match="fp16 export"):
        host_backend(export16[0], precision="fp32")


def test_too_many_instances_per_image(export32):
    batch = make_batch([2], seed=1)
    be = host_backend(export32[0])
    be.max_instances_per_image = 1
    with pytest.raises(ValueError, match="at most 1 per image"):
        be.run(batch)


# ----------------------------------------------------------------------------- planning
def test_profiles(export32):
    m = export32[1]
    p = plan_profiles(m, S, max_images=3)
    assert list(p) == [s["name"] for s in m["segments"]]
    assert p["full"]["A"] == ((1, 1, 32, 32), (3, 1, 32, 32), (3, 1, 32, 32))
    assert p["instance"]["B"] == ((1, 2, 32, 32), (24, 2, 32, 32), (24, 2, 32, 32))
    c = m["feature_channels"]
    assert p["fusion.conv8_up"] == {"conv7_3": ((1, c["conv7_3"], 4, 4), (3, c["conv7_3"], 4, 4), (3, c["conv7_3"], 4, 4)),
                                    "conv3_3": ((1, c["conv3_3"], 8, 8), (3, c["conv3_3"], 8, 8), (3, c["conv3_3"], 8, 8))}
    q = plan_profiles(m, 256, max_images=2, opt_images=1, opt_instances=5)
    assert q["instance"]["A"] == ((1, 1, 256, 256), (5, 1, 256, 256), (16, 1, 256, 256))
    assert q["fusion.out"]["conv10_2"][1] == (1, c["conv10_2"], 256, 256)
    assert plan_profiles(m, S, 1, max_instances_per_image=2)["instance"]["A"][2] == (2, 1, 32, 32)
    for kwargs in (dict(size=36, max_images=1), dict(size=S, max_images=0), dict(size=S, max_images=2, opt_images=3),
                   dict(size=S, max_images=1, opt_instances=9), dict(size=S, max_images=1, max_instances_per_image=9)):
        with pytest.raises(ValueError):
            plan_profiles(m, **kwargs)
    assert MAX_INSTANCES_PER_IMAGE == ops.MAX_INSTANCES


def test_profiles_match_onnx_graph_dims(export32):
    """Every profiled input names the ONNX graph's symbolic dims: batch n|m, fixed channels, S levels."""
    d, m = export32
    p = plan_profiles(m, 64, max_images=2)
    level_sym = {64: "S", 32: "S_2", 16: "S_4", 8: "S_8"}
    for seg in m["segments"]:
        model = onnx.load(str(d / seg["file"]))
        graph_inputs = {i.name: i.type.tensor_type.shape.dim for i in model.graph.input}
        assert set(graph_inputs) == set(p[seg["name"]])
        for name, (lo, opt, hi) in p[seg["name"]].items():
            dims = graph_inputs[name]
            assert dims[0].dim_param == seg["batch_dim"]
            assert dims[1].dim_value == lo[1] == hi[1]
            assert dims[2].dim_param == dims[3].dim_param == level_sym[hi[2]]
            assert lo[2:] == opt[2:] == hi[2:]


def test_buffer_sizes_match_real_segment_outputs(export32):
    """Max bytes of every tensor = what the exported segment really takes / gives at the profile max."""
    d, m = export32
    max_images = 2
    plan = plan_buffers(m, S, max_images)
    shapes = tensor_shapes(m, S, max_images, max_images * MAX_INSTANCES_PER_IMAGE)
    rng = np.random.default_rng(0)
    for seg in m["segments"]:
        sess = ort.InferenceSession(str(d / seg["file"]), providers=["CPUExecutionProvider"])
        feeds = {i["name"]: rng.standard_normal(shapes[seg["name"]][i["name"]]).astype(np.float32) for i in seg["inputs"]}
        for name, a in feeds.items():
            assert plan.tensor_bytes(seg["name"], name) == a.nbytes
        for name, out in zip(seg["outputs"], sess.run(None, feeds)):
            assert plan.tensor_bytes(seg["name"], name) == out.nbytes, (seg["name"], name)
            assert shapes[seg["name"]][name] == out.shape
    # every tensor fits its buffer; inputs of later stages read the blended (fused) buffers
    for (seg, name), (shape, buf) in plan.tensors.items():
        assert int(np.prod(shape)) * 4 <= plan.buffers[buf]
    assert plan.tensors[("fusion.conv8_up", "conv3_3")][1] == "fused/conv3_3"
    assert plan.tensors[("fusion.conv2_2", "conv2_2")][1] == "scratch/feat"
    assert set(plan.fused) == set(m["feature_names"])
    c = m["feature_channels"]
    assert plan.buffers["fused/conv1_2"] == max_images * c["conv1_2"] * S * S * 4
    assert plan.buffers["instance/feat.conv1_2"] == max_images * 8 * c["conv1_2"] * S * S * 4
    assert plan.buffers["scratch/feat"] == max(max_images * c[p] * (S >> m["feature_levels"][p]) ** 2 * 4
                                               for p in m["feature_names"])
    half = plan_buffers(m, S, max_images, np.float16)
    assert half.total_bytes * 2 == plan.total_bytes


def test_build_mode_and_io_dtype():
    assert build_mode("fp32", "10.3.0", True) == ("fp32", "fp32")
    assert build_mode("fp32", "11.1.0", False) == ("fp32", "fp32")
    assert build_mode("fp16", "10.3.0.30", True) == ("fp32", "fp16-flag")  # JetPack 6
    assert build_mode("fp16", "11.0.0", False) == ("fp16", "fp16-strong")
    assert build_mode("fp16", "11.0.0", True) == ("fp16", "fp16-strong")
    assert build_mode("fp16", "10.14.1", False) == ("fp16", "fp16-strong")
    assert build_mode("int8", "10.3.0", True) == ("int8", "int8-strong")  # the QDQ export, strongly typed
    with pytest.raises(ValueError):
        build_mode("int4", "10.3.0", True)
    assert io_dtype("int8-strong") == np.float32
    assert io_dtype("fp16-strong") == np.float16 and io_dtype("fp16-flag") == io_dtype("fp32") == np.float32


def test_cache_key_covers_every_component():
    prof = {"A": ((1, 1, 32, 32), (2, 1, 32, 32), (2, 1, 32, 32)), "B": ((1, 2, 32, 32), (2, 2, 32, 32), (2, 2, 32, 32))}
    base = dict(weights_sha256="a" * 64, segment="full", mode="fp32", trt_version="10.3.0", gpu_name="Orin",
                compute_capability=(8, 7), profile=prof)
    key = engine_cache_key(**base)
    assert len(key) == 64 and key == engine_cache_key(**dict(base, profile=dict(reversed(list(prof.items())))))
    assert key == engine_cache_key(**base, export_format=FORMAT)
    changes = dict(weights_sha256="b" * 64, segment="instance", mode="fp16-flag", trt_version="10.3.1",
                   gpu_name="NVIDIA H100", compute_capability=(9, 0),
                   profile=dict(prof, A=((1, 1, 32, 32), (1, 1, 32, 32), (2, 1, 32, 32))))
    keys = {key}
    for k, v in changes.items():
        keys.add(engine_cache_key(**dict(base, **{k: v})))
    keys.add(engine_cache_key(**base, export_format="instcolor-segments/1"))
    keys.add(engine_cache_key(**base, extra={"workspace": 1 << 30}))
    assert len(keys) == len(changes) + 3


def test_engine_files_written_atomically(tmp_path):
    root = tmp_path / "tensorrt"
    key = "c" * 64
    assert load_engine(root, "full", key) is None
    path = store_engine(root, "full", key, b"plan-1", dict(segment="full"))
    assert path == engine_path(root, "full", key) and load_engine(root, "full", key) == b"plan-1"
    assert json.loads(path.with_suffix(".json").read_text())["key"] == key
    store_engine(root, "full", key, b"plan-2", dict(segment="full"))
    assert load_engine(root, "full", key) == b"plan-2"
    with pytest.raises(TypeError):
        write_atomic(path, "not bytes")
    assert path.read_bytes() == b"plan-2"
    assert sorted(p.name for p in root.iterdir()) == sorted([path.name, path.with_suffix(".json").name])


# ----------------------------------------------------------------------------- wiring and the fuse op's out=
def test_make_backend_tensorrt_errors(tiny_weights_dir):
    from instcolor.backends import BACKENDS, make_backend

    assert "tensorrt" in BACKENDS
    with pytest.raises(ValueError, match="CUDA device"):
        make_backend(tiny_weights_dir, "tensorrt", device="cpu")
    with pytest.raises(ValueError, match="no options"):
        make_backend(tiny_weights_dir, "torch", precision="fp16")
    assert parse_device("cuda") == 0 and parse_device("cuda:1") == 1
    if TRT_REASON:
        with pytest.raises(ValueError) as e:
            make_backend(tiny_weights_dir, "tensorrt", device="cuda")
        assert str(e.value) == TRT_REASON and "\n" not in TRT_REASON and "tensorrt" in TRT_REASON


def test_fuse_out_argument():
    rng = np.random.default_rng(0)
    B, C, H, W, M = 2, 4, 8, 8, 3
    bg, bl = rng.standard_normal((B, C, H, W)).astype(np.float32), rng.standard_normal((B, 1, H, W)).astype(np.float32)
    fi, li = rng.standard_normal((M, C, 8, 8)).astype(np.float32), rng.standard_normal((M, 1, 8, 8)).astype(np.float32)
    info = np.array([[0, 4, 0, 4, 4, 4], [2, 2, 2, 2, 4, 4], [0, 0, 0, 0, 8, 8]], np.int64)
    img = np.array([0, 0, 1], np.int64)
    want = ops.fuse_instances(bg, bl, fi, li, info, img)
    out = np.full((B, C, H, W), np.nan, np.float32)
    assert ops.fuse_instances(bg, bl, fi, li, info, img, out=out) is out
    np.testing.assert_array_equal(out, want)
    with pytest.raises(ValueError, match="shape"):
        ops.fuse_instances(bg, bl, fi, li, info, img, out=out[:1])
    with pytest.raises(TypeError, match="dtype"):
        ops.fuse_instances(bg, bl, fi, li, info, img, out=out.astype(np.float64))
    with pytest.raises(ValueError, match="contiguous"):
        ops.fuse_instances(bg, bl, fi, li, info, img, out=np.zeros((B, C, W, H), np.float32).transpose(0, 1, 3, 2))
    import torch

    with pytest.raises(TypeError, match="numpy"):
        ops.fuse_instances(bg, bl, fi, li, info, img, out=torch.zeros(B, C, H, W))
    t = torch.zeros(B, C, H, W)
    assert ops.fuse_instances(torch.from_numpy(bg), bl, fi, li, info, img, out=t) is t
    np.testing.assert_array_equal(t.numpy(), want)


class _FakeCuda:
    """A bare __cuda_array_interface__ object (no memory behind it: only for argument checks)."""

    def __init__(self, shape, typestr="<f4", strides=None):
        self.__cuda_array_interface__ = dict(shape=shape, typestr=typestr, data=(0, False), strides=strides, version=3)


def test_fuse_out_bare_cuda_arrays_are_validated():
    a = [_FakeCuda((1, 4, 8, 8)), _FakeCuda((1, 1, 8, 8)), _FakeCuda((1, 4, 8, 8)), _FakeCuda((1, 1, 8, 8))]
    info, img = np.array([[0, 0, 0, 0, 8, 8]]), np.zeros(1, np.int64)
    if not ops.cuda_compiled():
        with pytest.raises(ValueError, match="CUDA"):
            ops.fuse_instances(*a, info, img, out=_FakeCuda((1, 4, 8, 8)))
        return
    with pytest.raises(ValueError, match="host"):
        ops.fuse_instances(*a[:3], np.zeros((1, 1, 8, 8), np.float32), info, img, out=_FakeCuda((1, 4, 8, 8)))
    with pytest.raises(TypeError, match="float16"):
        ops.fuse_instances(*a, info, img, out=_FakeCuda((1, 4, 8, 8), "<f2"))
    with pytest.raises(ValueError, match="C-contiguous"):
        ops.fuse_instances(*a, info, img, out=_FakeCuda((1, 4, 8, 8), strides=(4, 4, 32, 4 * 64)))
    with pytest.raises(ValueError, match="out must have shape"):
        ops.fuse_instances(*a, info, img, out=_FakeCuda((1, 4, 8, 4)))


# ----------------------------------------------------------------------------- CUDA / TensorRT call sequence, simulated
def sim_fuse(rt, device):
    """ops.fuse_instances as the CUDA kernel behaves: launched on ``stream`` (which must be the
    device's and belong to the current device), reading its inputs when the stream gets to it."""
    def fuse(bg, bl, fi, li, info, img, *, out, stream):
        assert isinstance(out, CudaArray) and stream == device.stream
        info, img = np.array(info), np.array(img)  # the host table is staged at the call
        views = [host_view(a) for a in (bg, bl, fi, li)]
        target = host_view(out)
        err = rt.launch_kernel(stream, lambda: ops.fuse_instances(*views, info, img, out=target))
        if err != 0:
            raise RuntimeError(f"fuse kernel launch failed: {err.name}")
        return out
    return fuse


@pytest.fixture
def sim(monkeypatch):
    """Simulated cuda-python (one 'Sim GPU') and TensorRT 10.3 (tests/trt_sim.py)."""
    import sys

    import instcolor.trt.cuda as tcuda
    import instcolor.trt.engine as tengine

    rt = SimCudart()
    trt = sim_tensorrt(rt)
    monkeypatch.setattr(tcuda, "cudart", lambda: rt)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(tengine._Logger, "instance", None)
    return rt, trt


@pytest.mark.parametrize("mode", ["eager", "graphs", "capture-unsupported"])
def test_cuda_device_and_tensorrt_runner_simulated(export32, ort_backend, sim, tmp_path, caplog, mode):
    """The whole TensorRT path -- EngineStore (build, cache), TensorRTRunner (named tensors, shapes,
    addresses, shared activation memory, execute_async_v3, one context + graph per binding),
    CudaDevice (buffers, pinned staging, stream-ordered copies and fills, capture) -- against the
    strict simulation: the backend reproduces the ORT backend, graphs replay with new data."""
    rt, trt = sim
    if mode == "capture-unsupported":
        trt.sim_capturable = False  # every enqueue under capture is refused, as with uncapturable layers
    d, manifest = export32
    be = TensorRTBackend(d, max_images=3, device="cuda:0", cache_root=tmp_path, cuda_graphs=mode != "eager")
    be.fuse = sim_fuse(rt, be.device)
    for counts, seed in (([2, 0, 1], 1), ([2, 0, 1], 2), ([0], 3), ([3, 3], 4), ([2, 0, 1], 5)):
        b = make_batch(counts, seed=seed)
        np.testing.assert_allclose(be.run(b), ort_backend.run(b), rtol=0, atol=2e-5)
    runners = be.sets[S].runners
    engines = {n: r.engine for n, r in runners.items()}
    assert len(trt.builds) == len(manifest["segments"]) - 2 and not any(p["tf32"] for p in trt.builds)  # no head.*
    scratch = max(r.memory_size for r in runners.values())
    assert rt.device_bytes == be.sets[S].plan.total_bytes + scratch  # buffers + one shared activation block
    assert rt.live_device_bytes() == rt.device_bytes  # no context has memory of its own
    if mode == "graphs":
        # first batch captures (16 segments); replays: batch 2 and 5 all 16, batch 3 full (n=1),
        # batch 4 the 14 fusion segments (n=2; its instance m=6 is a new binding)
        assert rt.launches == 16 + 1 + 14 + 16
        assert engines["instance"].contexts == 2 and engines["fusion.conv1_2"].contexts == 1
        assert all(len(r.graphs) == engines[n].contexts for n, r in runners.items())
    elif mode == "eager":
        assert rt.launches == 0 and all(e.contexts == 1 for e in engines.values())
    else:  # each runner warned once, naming itself and the reason, then ran eagerly
        assert rt.launches == 0 and all(r.graphs is None for r in runners.values())
        warned = [r.message for r in caplog.records if "cannot be captured" in r.message]
        assert sorted(w.split(":")[0] for w in warned) == sorted(runners)
        assert all("refused to enqueue" in w or "Invalidated" in w for w in warned)
        assert all(e.contexts == 1 for e in engines.values())
    be.close()
    assert not rt.mem


# ----------------------------------------------------------------------------- real TensorRT (skips without a GPU)
@NEEDS_TRT
@pytest.mark.parametrize("precision, atol", [("fp32", 2e-3), ("fp16", 5e-2)])
def test_tensorrt_engines_match_onnxruntime(export32, export16, ort_backend, tmp_path, precision, atol):
    from instcolor.backends.tensorrt_backend import required_export_precision

    need = required_export_precision(precision)
    d = export32[0] if need == "fp32" else export16[0]
    be = TensorRTBackend(d, precision=precision, max_images=3, cache_root=tmp_path / "engines")
    for counts, seed in (([0], 1), ([1], 2), ([3, 0, 8], 3), ([2, 1], 4)):
        b = make_batch(counts, seed=seed)
        np.testing.assert_allclose(be.run(b), ort_backend.run(b), rtol=0, atol=atol)
    engines = sorted((tmp_path / "engines").glob("*.engine"))
    assert len(engines) == len(export32[1]["segments"]) - 2  # head.* engines are built when logits are asked for
    stamps = [p.stat().st_mtime_ns for p in engines]
    be.close()
    again = TensorRTBackend(d, precision=precision, max_images=3, cache_root=tmp_path / "engines")  # from the cache
    b = make_batch([2, 0], seed=5)
    np.testing.assert_allclose(again.run(b), ort_backend.run(b), rtol=0, atol=atol)
    assert [p.stat().st_mtime_ns for p in engines] == stamps


@NEEDS_TRT
def test_tensorrt_cuda_graphs_match_eager(export32, tmp_path):
    eager = TensorRTBackend(export32[0], max_images=2, cache_root=tmp_path / "e")
    graphs = TensorRTBackend(export32[0], max_images=2, cache_root=tmp_path / "e", cuda_graphs=True)
    for counts, seed in (([2, 1], 1), ([2, 1], 2), ([0, 3], 3), ([2, 1], 4)):  # repeats replay graphs
        b = make_batch(counts, seed=seed)
        np.testing.assert_allclose(graphs.run(b), eager.run(b), rtol=0, atol=1e-5)
    assert any(r.graphs for r in graphs.sets[S].runners.values())
