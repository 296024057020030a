"""Every golden case (authors' code, deterministic weights) through the public API."""
import numpy as np
import pytest
import torch

from conftest import GOLDEN_CASES, NEEDS_GOLDEN, load_case

pytestmark = NEEDS_GOLDEN
CASE_IDS = [p.stem for p in GOLDEN_CASES]


def _hints(z):
    from instcolor import HintPlanes

    return HintPlanes(ab=z["hint_B"][0], mask=z["mask_B"][0] + 0.5)


def _check_rgb_processed(got, want):
    diff = np.abs(got.astype(np.int16) - want.astype(np.int16))
    assert diff.max() <= 1
    assert (diff > 0).mean() < 0.005


@pytest.mark.parametrize("native", [True, False], ids=["native", "reference"])
@pytest.mark.parametrize("path", GOLDEN_CASES, ids=CASE_IDS)
def test_golden_case_via_colorizer(request, path, native):
    golden_colorizer = request.getfixturevalue("golden_colorizer" if native else "golden_colorizer_reference")
    z = load_case(path)
    size = int(z["fine_size"])
    r = golden_colorizer.colorize(z["image"], boxes=z["det_boxes"], scores=z["det_scores"], hints=_hints(z), size=size)
    want = z["fusion_out_reg"] if "fusion_out_reg" in z else z["gcomp_out_reg"]
    np.testing.assert_array_equal(r.boxes, z["boxes"])
    assert r.ab.shape == (2, size, size) and r.ab.dtype == np.float32
    np.testing.assert_allclose(r.ab, want[0], rtol=0, atol=1e-4)
    _check_rgb_processed(r.rgb_processed, z["out_rgb_u8"])
    assert r.rgb.shape == z["image"].shape and r.rgb.dtype == np.uint8
    # the full-resolution picture (what users and the CLI get): the golden ab, upsampled and joined
    # with the photo's own L by the reference composer
    from instcolor.compose import compose_reference

    _check_rgb_processed(r.rgb, compose_reference(z["image"], want[0]))


@pytest.mark.parametrize("path", [p for p in GOLDEN_CASES if "nobox" not in p.stem][:3], ids=lambda p: p.stem)
def test_golden_intermediates(golden_colorizer, path):
    """Instance-net outputs, GComp on the full image, and the blend weights of two fusion blocks."""
    from instcolor.fuse import blend_weights_reference
    from instcolor.models.backbone import FEATURE_NAMES

    z = load_case(path)
    be = golden_colorizer.backend
    inst_out, feats = be.instance_outputs(z["crop_L"])
    np.testing.assert_allclose(inst_out, z["inst_out_reg"], rtol=0, atol=1e-4)
    with torch.inference_mode():
        gcomp = be.full(torch.from_numpy(z["full_L"]), torch.from_numpy(z["hint_B"]), torch.from_numpy(z["mask_B"]))
    np.testing.assert_allclose(gcomp.numpy(), z["gcomp_out_reg"], rtol=0, atol=1e-4)

    seen = {}
    fusion = be.fusion
    levels = [torch.from_numpy(z[k]) for k in ("box_info", "box_info_2x", "box_info_4x", "box_info_8x")]
    original = fusion.fuse_fn
    calls = []

    def spy(bg, bg_logit, inst_feat, inst_logit, info, inst_image):
        name = FEATURE_NAMES[len(calls)]  # the fusion net blends in FEATURE_NAMES order
        calls.append(name)
        if name in ("conv1_2", "conv4_3"):
            seen[name] = blend_weights_reference(bg_logit, inst_logit, info)
        return original(bg, bg_logit, inst_feat, inst_logit, info, inst_image)

    fusion.fuse_fn = spy
    try:
        with torch.inference_mode():
            fusion(torch.from_numpy(z["full_L"]), torch.from_numpy(z["hint_B"]), torch.from_numpy(z["mask_B"]),
                   feats, levels, torch.zeros(len(z["boxes"]), dtype=torch.int64))
    finally:
        fusion.fuse_fn = original
    assert calls == list(FEATURE_NAMES)
    for name in ("conv1_2", "conv4_3"):
        np.testing.assert_allclose(seen[name].numpy(), z[f"fusion_softmax_{name}"], rtol=0, atol=1e-5)


@pytest.mark.parametrize("path", GOLDEN_CASES, ids=CASE_IDS)
def test_golden_preprocessing(path):
    from instcolor import prepare as P

    z = load_case(path)
    size = int(z["fine_size"])
    boxes = P.select_boxes(z["det_boxes"], z["det_scores"], z["image"].shape[:2])
    np.testing.assert_array_equal(boxes, z["boxes"])
    p = P.prepare(z["image"], boxes, (), size)
    np.testing.assert_array_equal(p.full_rgb_u8, z["full_rgb_u8"])
    np.testing.assert_allclose(p.full_L, z["full_L"][0], rtol=0, atol=1e-5)
    np.testing.assert_allclose(p.crop_L, z["crop_L"], rtol=0, atol=1e-5)
    for got, key in zip(p.box_info, ("box_info", "box_info_2x", "box_info_4x", "box_info_8x")):
        np.testing.assert_array_equal(got, z[key])
    hint, mask = P.patch_hints(z["full_ab"][0], z["hint_patches"])
    np.testing.assert_allclose(hint, z["hint_B"][0], rtol=0, atol=1e-5)
    np.testing.assert_array_equal(mask, z["mask_B"][0])
    np.testing.assert_array_equal(P.empty_hints(size)[1], z["crop_mask_B"][0] if len(boxes) else np.full((1, size, size), -0.5, np.float32))
    if len(boxes):
        crops = np.stack([P.pil_bilinear_resize(z["image"][y0:y1, x0:x1], size, size) for x0, y0, x1, y1 in boxes.tolist()])
        np.testing.assert_array_equal(crops, z["crops_rgb_u8"])


@NEEDS_GOLDEN
def test_color_conversion_golden():
    from conftest import GOLDEN
    from instcolor import color

    z = np.load(GOLDEN / "color_conversion.npz")
    np.testing.assert_allclose(color.rgb_to_lab(torch.from_numpy(z["rgb_in"])).numpy(), z["lab_norm_out"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(color.lab_to_rgb(torch.from_numpy(z["lab_norm_in"])).numpy(), z["rgb_out"], rtol=0, atol=1e-5)


def test_batch_equals_single(golden_colorizer):
    """Images with different instance counts in one batch give the per-image results."""
    z1, z2, z3 = [load_case(p) for p in GOLDEN_CASES if "_s64_" in p.stem][:3]
    imgs = [z["image"] for z in (z1, z2, z3)]
    boxes = [z["det_boxes"] for z in (z1, z2, z3)]
    scores = [z["det_scores"] for z in (z1, z2, z3)]
    batch = golden_colorizer.colorize_batch(imgs, boxes, scores, size=64)
    for img, b, s, r in zip(imgs, boxes, scores, batch):
        single = golden_colorizer.colorize(img, b, s, size=64)
        np.testing.assert_allclose(r.ab, single.ab, rtol=0, atol=1e-5)
        np.testing.assert_array_equal(r.boxes, single.boxes)
