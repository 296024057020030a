"""The fixed architecture of the three nets as plain data (no PyTorch): the feature points, their
grid levels and channel counts, the forward pass's steps and the blend blocks' official names.

:mod:`.backbone` and :mod:`.fusion` build the PyTorch nets from these; :mod:`instcolor.onnx_graphs`
builds the ONNX segments from them without PyTorch; the export manifest and the segment backends
read them. Importing it imports nothing else (no numpy, no PyTorch).
"""
from __future__ import annotations

FEATURE_NAMES = ("conv1_2", "conv2_2", "conv3_3", "conv4_3", "conv5_3", "conv6_3", "conv7_3",
                 "conv8_up", "conv8_3", "conv9_up", "conv9_3", "conv10_up", "conv10_2")
# Grid level of each feature point: 0 = S, 1 = S/2, 2 = S/4, 3 = S/8 (index into box_info levels).
FEATURE_LEVELS = dict(conv1_2=0, conv2_2=1, conv3_3=2, conv4_3=3, conv5_3=3, conv6_3=3, conv7_3=3,
                      conv8_up=2, conv8_3=2, conv9_up=1, conv9_3=1, conv10_up=0, conv10_2=0)
# Feature points that the next block begins with an (official: in-place) ReLU.
RELU_FOLLOWED = ("conv8_up", "conv9_up", "conv10_up")
NUM_CLASSES = 529
# SIGGRAPH'17 global hints input, (N, GLOBAL_INPUT_CHANNELS, 1, 1): the 529-bin ab histogram, its
# flag, the mean HSV saturation, its flag (see :class:`instcolor.global_hints.GlobalHints`).
GLOBAL_INPUT_CHANNELS = NUM_CLASSES + 3
# What each step of the forward pass reads (after any blend at those points).
STAGE_INPUTS = dict(conv1_2=("A", "B", "mask"), conv2_2=("conv1_2",), conv3_3=("conv2_2",), conv4_3=("conv3_3",),
                    conv5_3=("conv4_3",), conv6_3=("conv5_3",), conv7_3=("conv6_3",),
                    conv8_up=("conv7_3", "conv3_3"), conv8_3=("conv8_up",), conv9_up=("conv8_3", "conv2_2"),
                    conv9_3=("conv9_up",), conv10_up=("conv9_3", "conv1_2"), conv10_2=("conv10_up",),
                    out=("conv10_2",))
# Steps by kind: a stride-2 slice then the block; the block alone; (transposed conv) + (shortcut conv).
DOWN_BLOCKS = dict(conv2_2="model2", conv3_3="model3", conv4_3="model4")
SAME_BLOCKS = dict(conv5_3="model5", conv6_3="model6", conv7_3="model7", conv8_3="model8", conv9_3="model9",
                   conv10_2="model10")
UP_BLOCKS = dict(conv8_up=("model8up", "model3short8"), conv9_up=("model9up", "model2short9"),
                 conv10_up=("model10up", "model1short10"))
# Official attribute name of the fusion net's blend block at each feature point.
BLOCK_NAMES = dict(conv1_2="weight_layer", conv2_2="weight_layer2", conv3_3="weight_layer3",
                   conv4_3="weight_layer4", conv5_3="weight_layer5", conv6_3="weight_layer6",
                   conv7_3="weight_layer7", conv8_up="weight_layer8_1", conv8_3="weight_layer8_2",
                   conv9_up="weight_layer9_1", conv9_3="weight_layer9_2", conv10_up="weight_layer10_1",
                   conv10_2="weight_layer10_2")
BLEND_INNER_CHANNELS = 16  # the blend convs are tiny; kept at 16 channels at every width
NET_CLASS_NAMES = {"full": "SIGGRAPHBackbone", "instance": "InstanceNet", "fusion": "FusionNet"}


def channels(width: float) -> dict[int, int]:
    """Official channel count -> channel count at ``width``."""
    return {c: max(1, int(round(c * width))) for c in (64, 128, 256, 512)}


def feature_channels(width: float) -> dict[str, int]:
    """Channels of each feature point at ``width``."""
    c = channels(width)
    return dict(conv1_2=c[64], conv2_2=c[128], conv3_3=c[256], conv4_3=c[512], conv5_3=c[512],
                conv6_3=c[512], conv7_3=c[512], conv8_up=c[256], conv8_3=c[256], conv9_up=c[128],
                conv9_3=c[128], conv10_up=c[128], conv10_2=c[128])
