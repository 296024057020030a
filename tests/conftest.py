import os
import sys
from pathlib import Path

import numpy as np
import pytest

# (PyTorch is imported by the fixtures that need it: the torch-free CI venv loads this file too)

sys.path.insert(0, str(Path(__file__).resolve().parent))

SHARED = Path(__file__).resolve().parents[2] / "shared"
GOLDEN = SHARED / "golden"
NEEDS_GOLDEN = pytest.mark.skipif(not GOLDEN.is_dir(), reason=f"golden vectors not found at {GOLDEN} (../shared beside the checkout)")
GOLDEN_CASES = sorted(GOLDEN.glob("v*.npz")) if GOLDEN.is_dir() else []
SEEDS = {"full": 101, "instance": 102, "fusion": 103}  # GComp, G, GF visible seeds
GOLDEN_NET_NAMES = {"full": "GComp", "instance": "G", "fusion": "GF"}
# What the tests read from ../shared; without them those tests skip, except in CI (see below).
SHARED_NEEDED = ("golden/color_conversion.npz", "golden/v*.npz", "models/yolox_nano_coco_416.onnx")


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no", "off")


def missing_shared(root: Path = SHARED) -> list[str]:
    """The entries of :data:`SHARED_NEEDED` not present under ``root``."""
    return [p for p in SHARED_NEEDED if not any(f.is_file() for f in root.glob(p))]


def pytest_sessionstart(session):
    """CI always has ../shared and the onnx extra: there a missing copy fails the run instead of
    silently skipping the golden, detector, export and photo tests. Locally (CI unset) those tests
    skip with a reason."""
    if not _in_ci():
        return
    missing = missing_shared()
    if missing:
        raise pytest.UsageError(
            f"CI is set but the shared test data is missing under {SHARED}: {', '.join(missing)}. "
            "CI must provide ../shared beside the checkout (golden vectors, the YOLOX-Nano model); "
            "unset CI to run with those tests skipped.")
    import importlib.util

    absent = [m for m in ("onnx", "onnxruntime") if importlib.util.find_spec(m) is None]
    if absent:  # CI installs .[onnx,test]; without them the export, backend and detector tests would skip
        raise pytest.UsageError(f"CI is set but {', '.join(absent)} is not installed: pip install '.[onnx,test]'")


@pytest.fixture(scope="session", autouse=True)
def _private_export_cache(tmp_path_factory):
    """Exports made by the default (auto -> onnxruntime) backend go to a per-run folder, never to
    the user's ~/.cache/instcolor."""
    import os

    old = os.environ.get("INSTCOLOR_CACHE")
    os.environ["INSTCOLOR_CACHE"] = str(tmp_path_factory.mktemp("instcolor-cache"))
    yield
    if old is None:
        os.environ.pop("INSTCOLOR_CACHE", None)
    else:
        os.environ["INSTCOLOR_CACHE"] = old


@pytest.fixture(scope="module", autouse=True)
def _collect_cycles_after_each_module():
    """A full GC pass after each test module: a reference cycle that holds ONNX Runtime sessions
    (hundreds of MB and a thread pool each) is freed before the next module, not at some later
    generation-2 pass. Without it the suite's peak memory grew past 14 GB here."""
    yield
    import gc

    gc.collect()


def rule_nets():
    """The three full-width nets with the golden weights rule, eval mode."""
    import torch
    from weights_rule import rule_state_dict
    from instcolor.models import FusionNet, InstanceNet, SIGGRAPHBackbone, load_state_dict_strict

    nets = {"full": SIGGRAPHBackbone(), "instance": InstanceNet(), "fusion": FusionNet()}
    for kind, net in nets.items():
        shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
        state = {k: torch.from_numpy(v) for k, v in rule_state_dict(shapes, SEEDS[kind]).items()}
        load_state_dict_strict(net, state, f"rule weights ({kind})")
        net.eval()
    return nets


@pytest.fixture(scope="session")
def golden_weights_dir(tmp_path_factory):
    """Official file layout with the golden weights rule (the fusion file bare)."""
    if not GOLDEN.is_dir():
        pytest.skip(f"golden vectors not found at {GOLDEN}")
    from instcolor.models import save_official

    d = tmp_path_factory.mktemp("rule_weights")
    save_official(d, rule_nets())
    return d


@pytest.fixture(scope="session")
def golden_weights_dir_prefixed(golden_weights_dir, tmp_path_factory):
    """Same weights, every file with the DataParallel ``module.`` prefix."""
    import torch

    d = tmp_path_factory.mktemp("rule_weights_prefixed")
    for f in golden_weights_dir.iterdir():
        state = torch.load(f, weights_only=True)
        torch.save({"module." + k: v for k, v in state.items()}, d / f.name)
    return d


@pytest.fixture(scope="session")
def golden_colorizer(golden_weights_dir):
    """Torch backend with the native kernels (the default whenever the extension is built)."""
    from instcolor import Colorizer

    c = Colorizer.from_pretrained(golden_weights_dir, backend="torch", device="cpu")
    assert c.ops is not None, "instcolor._native is not built"
    return c


@pytest.fixture(scope="session")
def golden_colorizer_reference(golden_weights_dir):
    """Torch backend with the pure PyTorch/numpy reference for every stage."""
    from instcolor import Colorizer

    return Colorizer.from_pretrained(golden_weights_dir, backend="torch", device="cpu", native=False)


def load_case(path):
    return dict(np.load(path))


def tiny_nets(width=0.125, seed=0):
    """Small random nets of the official topology, for fast API/CLI tests."""
    import torch
    from instcolor.models import FusionNet, InstanceNet, SIGGRAPHBackbone

    torch.manual_seed(seed)
    return {"full": SIGGRAPHBackbone(width).eval(), "instance": InstanceNet(width).eval(), "fusion": FusionNet(width).eval()}


@pytest.fixture(scope="session")
def tiny_weights_dir(tmp_path_factory):
    from instcolor.models import save_official

    d = tmp_path_factory.mktemp("tiny_weights")
    save_official(d, tiny_nets(), fusion_prefix=True)
    return d


@pytest.fixture(scope="session")
def tiny_colorizer(tiny_weights_dir):
    from instcolor import Colorizer

    return Colorizer.from_pretrained(tiny_weights_dir)
