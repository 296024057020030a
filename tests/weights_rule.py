"""The golden README's deterministic weights rule (seeded normal draws per state-dict key).

Used to build checkpoints that reproduce the authors' numbers without their trained weights.
"""
from __future__ import annotations

import math
import zlib

import numpy as np

CONVT = {"model8up.0.weight", "model9up.0.weight", "model10up.0.weight"}


def rule_state_dict(shapes: dict[str, tuple], seed: int) -> dict[str, np.ndarray]:
    bn = {k[: -len(".running_mean")] for k in shapes if k.endswith(".running_mean")}
    out = {}
    for key, shape in shapes.items():
        prefix, leaf = key.rsplit(".", 1)
        if leaf == "num_batches_tracked":
            out[key] = np.zeros(shape, np.int64)
            continue
        z = np.random.default_rng(zlib.crc32(f"{seed}:{key}".encode("utf-8"))).standard_normal(shape)
        if prefix in bn:
            a = {"weight": 1.0 + 0.1 * z, "bias": 0.1 * z, "running_mean": 0.1 * z,
                 "running_var": 1.0 + 0.1 * np.abs(z)}[leaf]
        elif len(shape) == 4:
            fan = shape[0] * shape[2] * shape[3] / 4.0 if key in CONVT else shape[1] * shape[2] * shape[3]
            gain = (0.5 if key == "model_out.0.weight" else
                    3.0 if (".simple_instance_conv." in key or ".simple_bg_conv." in key) else math.sqrt(2.0))
            a = z * (gain / math.sqrt(fan))
        else:
            a = 0.02 * z
        out[key] = a.astype(np.float32)
    return out
