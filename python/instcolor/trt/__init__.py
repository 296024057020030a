"""TensorRT support of the TensorRT backend (:mod:`instcolor.backends.tensorrt_backend`).

* :mod:`.plan` -- pure: tensor shapes, optimization profiles, buffer sizes, fp16 build mode;
* :mod:`.cache` -- engine cache key and atomic engine files;
* :mod:`.memory` -- the device interface and its numpy stand-in :class:`.memory.HostDevice`;
* :mod:`.cuda` -- cuda-python: device buffers, pinned staging, stream, CUDA graphs;
* :mod:`.engine` -- engine build / load and :class:`.engine.TensorRTRunner` (the ``EngineRunner``).

Only :mod:`.cuda` and :mod:`.engine` need cuda-python / TensorRT, and only when used.
"""
from .cache import engine_cache_key
from .memory import HostDevice
from .plan import (BUILD_MODES, MAX_INSTANCES_PER_IMAGE, BufferPlan, build_mode, io_dtype, plan_buffers,
                   plan_profiles, tensor_shapes, tensor_specs)

__all__ = ["BUILD_MODES", "MAX_INSTANCES_PER_IMAGE", "BufferPlan", "HostDevice", "build_mode", "engine_cache_key",
           "io_dtype", "plan_buffers", "plan_profiles", "tensor_shapes", "tensor_specs"]
