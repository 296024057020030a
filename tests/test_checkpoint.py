"""Strict checkpoint loading in the official layout."""
import numpy as np
import pytest
import torch

from conftest import NEEDS_GOLDEN, GOLDEN_CASES, load_case, tiny_nets
from instcolor import Colorizer
from instcolor.models import CheckpointError, FusionNet, InstanceNet, load_nets, load_state_dict_strict, save_official


def test_missing_and_unexpected_keys_are_listed():
    net = InstanceNet(0.125)
    state = net.state_dict()
    state.pop("model1.0.weight")
    state["model_extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"missing keys \(1\): model1.0.weight.*unexpected keys \(1\): model_extra.weight"):
        load_state_dict_strict(InstanceNet(0.125), state, "x.pth")


def test_shape_mismatch_is_reported():
    with pytest.raises(CheckpointError, match="shape mismatches"):
        load_state_dict_strict(InstanceNet(0.25), InstanceNet(0.125).state_dict(), "x.pth")


def test_fusion_file_in_place_of_instance_file_fails(tmp_path):
    save_official(tmp_path, tiny_nets())
    (tmp_path / "latest_net_G.pth").write_bytes((tmp_path / "latest_net_GF.pth").read_bytes())
    with pytest.raises(CheckpointError, match="latest_net_G.pth does not fit InstanceNet: unexpected keys"):
        load_nets(tmp_path)


def test_missing_files_and_corrupt_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_nets(tmp_path / "nowhere")
    with pytest.raises(CheckpointError, match="missing weights file"):
        load_nets(tmp_path)
    save_official(tmp_path, tiny_nets())
    (tmp_path / "latest_net_GComp.pth").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_nets(tmp_path)


def test_round_trip_with_module_prefix_and_width_inference(tmp_path):
    nets = tiny_nets(seed=3)
    save_official(tmp_path, nets, fusion_prefix=True)
    assert all(k.startswith("module.") for k in torch.load(tmp_path / "latest_net_GF.pth", weights_only=True))
    loaded = load_nets(tmp_path)
    assert loaded["fusion"].width == 0.125
    for kind in nets:
        for (k, a), (k2, b) in zip(nets[kind].state_dict().items(), loaded[kind].state_dict().items()):
            assert k == k2 and torch.equal(a, b)


def test_missing_num_batches_tracked_is_accepted():
    state = {k: v for k, v in FusionNet(0.125).state_dict().items() if not k.endswith("num_batches_tracked")}
    load_state_dict_strict(FusionNet(0.125), state)


@NEEDS_GOLDEN
def test_module_prefixed_official_files_give_golden_output(golden_weights_dir_prefixed):
    c = Colorizer.from_pretrained(golden_weights_dir_prefixed)
    z = load_case(next(p for p in GOLDEN_CASES if "3box_photoB" in p.stem))
    r = c.colorize(z["image"], z["det_boxes"], z["det_scores"], size=int(z["fine_size"]))
    np.testing.assert_allclose(r.ab, z["fusion_out_reg"][0], rtol=0, atol=1e-4)
