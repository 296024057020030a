"""ONNX Runtime session settings shared by the colorization backend and the ONNX detectors."""
from __future__ import annotations

import os


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask; ``os.cpu_count()`` where that is unknown)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def session_options(threads: int | None = None):
    """``onnxruntime.SessionOptions`` for CPU inference: ``threads`` intra-op threads (None = the usable
    cores), one inter-op thread, sequential execution, every graph optimisation, memory pattern and
    CPU arena on, warnings and above logged, and worker threads that sleep when idle.

    Why no spinning: sessions run one after another with native kernels and other runtimes (torch,
    another session) in between; spinning pool threads would steal their cores -- up to 10x slower
    when the machine is busy."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads or usable_cores()
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.enable_mem_pattern = True
    so.enable_cpu_mem_arena = True
    so.log_severity_level = 2
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return so
