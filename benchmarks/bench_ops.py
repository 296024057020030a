"""Time the native ops (instcolor.ops) against their reference implementations.

    python benchmarks/bench_ops.py [--quick] [--size 256] [--boxes 8] [--no-gpu]

Prints one table per device: milliseconds (median of the repetitions) of the native op and of the
reference, the speed-up, and the native op's effective bandwidth (bytes it must read + write / time)
next to the machine's copy bandwidth (a numpy copy on the host, a tensor copy on the GPU). For
fuse_instances it also prints, per fusion layer, the size of the padded (M, C, H, W) feature +
(M, 1, H, W) logit tensors the reference materialises and the native kernel never builds.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch


from instcolor import color, compose, fuse, ops, prepare

# The fusion net's 13 blend points: channels and grid divisor (S, S/2, S/4, S/8 ...).
FUSION_LAYERS = [
    ("conv1_2", 64, 1), ("conv2_2", 128, 2), ("conv3_3", 256, 4), ("conv4_3", 512, 8), ("conv5_3", 512, 8),
    ("conv6_3", 512, 8), ("conv7_3", 512, 8), ("conv8_up", 256, 4), ("conv8_3", 256, 4), ("conv9_up", 128, 2),
    ("conv9_3", 128, 2), ("conv10_up", 128, 1), ("conv10_2", 128, 1),
]


def timeit(fn, reps: int, sync=None) -> float:
    """Median wall time in ms (one warm-up call)."""
    fn()
    if sync:
        sync()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        if sync:
            sync()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def host_copy_bandwidth(mb: int = 256) -> float:
    """GB/s of a large numpy copy (read + write)."""
    a = np.ones(mb * 2**20 // 8)
    b = np.empty_like(a)
    t = min(timeit(lambda: np.copyto(b, a), 1) for _ in range(3))
    return 2 * a.nbytes / (t * 1e-3) / 1e9


def gpu_copy_bandwidth(mb: int = 1024) -> float:
    a = torch.ones(mb * 2**20 // 4, device="cuda")
    b = torch.empty_like(a)
    t = timeit(lambda: b.copy_(a), 5, torch.cuda.synchronize)
    return 2 * a.numel() * 4 / (t * 1e-3) / 1e9


def fuse_inputs(S: int, n: int, C: int, div: int, device: str, dtype=torch.float32, seed: int = 0):
    g = S // div
    rng = np.random.default_rng(seed)
    H0, W0 = 480, 640  # original image the boxes live in
    boxes = []
    for _ in range(n):
        x0, x1 = sorted(rng.integers(0, W0, 2))
        y0, y1 = sorted(rng.integers(0, H0, 2))
        boxes.append([x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)])
    info = torch.from_numpy(prepare.box_info(np.array(boxes), (H0, W0), g))
    gen = torch.Generator().manual_seed(seed)
    mk = lambda *s: torch.randn(*s, generator=gen).to(device=device, dtype=dtype)  # noqa: E731
    return (mk(1, C, g, g), mk(1, 1, g, g).abs(), mk(n, C, g, g), mk(n, 1, g, g).abs(), info,
            torch.zeros(n, dtype=torch.int64))


def fuse_bytes(S, n, C, div, itemsize=4):
    g = S // div
    moved = itemsize * (2 * C * g * g + g * g + n * (C + 1) * g * g)  # bg in + out, bg logit, instances in
    padded = itemsize * n * (C + 1) * g * g                           # padded features + logits
    return moved, padded


def row(name, shape, t_nat, t_ref, nbytes, bw):
    gbs = nbytes / (t_nat * 1e-3) / 1e9
    ref = f"{t_ref:9.2f}" if t_ref is not None else "        -"
    sp = f"{t_ref / t_nat:7.1f}x" if t_ref is not None else "       -"
    print(f"{name:<18} {shape:<30} {t_nat:9.3f} {ref} {sp} {gbs:8.2f} {100 * gbs / bw:6.1f}%")


def header(title, bw):
    print(f"\n== {title} (copy bandwidth {bw:.1f} GB/s)")
    print(f"{'op':<18} {'shape':<30} {'native ms':>9} {'ref ms':>9} {'speedup':>8} {'GB/s':>8} {'of copy':>7}")


def bench_cpu(S, n, reps, quick):
    bw = host_copy_bandwidth(64 if quick else 256)
    header(f"CPU, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}", bw)
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    rref = max(1, reps // 3)

    t_n = timeit(lambda: ops.rgb_to_lab(img, S), reps)
    t_r = timeit(lambda: prepare.lab_of_uint8(prepare.pil_bilinear_resize(img, S, S)), rref)
    row("rgb_to_lab+resize", f"480x640 u8 -> 3x{S}x{S}", t_n, t_r, img.nbytes + 12 * S * S, bw)

    lab = ops.rgb_to_lab(img, S)
    t_n = timeit(lambda: ops.lab_to_rgb(lab), reps)
    lt = torch.from_numpy(lab)[None]
    t_r = timeit(lambda: color.lab_to_rgb(lt), rref)
    row("lab_to_rgb", f"3x{S}x{S} f32", t_n, t_r, 2 * lab.nbytes, bw)

    boxes = []
    for _ in range(n):
        x0, x1 = sorted(rng.integers(0, 640, 2))
        y0, y1 = sorted(rng.integers(0, 480, 2))
        boxes.append([x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)])
    boxes = np.array(boxes)
    crop_bytes = sum((x1 - x0) * (y1 - y0) * 3 for x0, y0, x1, y1 in boxes.tolist()) + n * S * S * 4
    t_n = timeit(lambda: ops.roi_crop_resize(img, boxes, S), reps)
    t_r = timeit(lambda: prepare.prepare(img, boxes, None, S), rref)  # includes the full image (~1/(n+1))
    row("roi_crop_resize", f"{n} boxes -> {n}x1x{S}x{S}", t_n, t_r, crop_bytes, bw)

    ab = (rng.standard_normal((2, S, S)) * 0.3).astype(np.float32)
    t_n = timeit(lambda: ops.compose(img, ab), reps)
    t_r = timeit(lambda: compose.compose_reference(img, ab), rref)
    row("compose", f"480x640 + 2x{S}x{S}", t_n, t_r, 2 * img.nbytes + ab.nbytes, bw)
    L = lab[:1].copy()
    t_n = timeit(lambda: ops.compose_processed(L, ab), reps)
    t_r = timeit(lambda: compose.compose_processed_reference(L, ab), rref)
    row("compose_processed", f"{S}x{S}", t_n, t_r, L.nbytes + ab.nbytes + 3 * S * S, bw)

    tot_n = tot_r = 0.0
    print(f"-- fuse_instances, S={S}, N={n} instances, B=1 (padded MB = the (M,C,H,W)+(M,1,H,W) "
          "tensors the reference builds; not built natively)")
    for name, C, div in FUSION_LAYERS:
        args = fuse_inputs(S, n, C, div, "cpu")
        t_n = timeit(lambda: ops.fuse_instances(*args), reps)
        t_r = timeit(lambda: fuse.fuse_instances_reference(*args), 1 if quick else rref)
        tot_n += t_n
        tot_r += t_r
        moved, padded = fuse_bytes(S, n, C, div)
        g = S // div
        row(f"fuse {name}", f"C={C:<3} {g:>3}x{g:<3} padded {padded / 2**20:5.1f} MB", t_n, t_r, moved, bw)
    padded_total = sum(fuse_bytes(S, n, C, d)[1] for _, C, d in FUSION_LAYERS)
    print(f"fuse, 13 layers: native {tot_n:.2f} ms, reference {tot_r:.2f} ms ({tot_r / tot_n:.1f}x); "
          f"padded tensors avoided: {padded_total / 2**20:.1f} MB per image "
          f"({2 * padded_total / 2**20:.1f} MB of memory traffic: written once, read once)")


def bench_gpu(S, n, reps, quick):
    bw = gpu_copy_bandwidth(256 if quick else 1024)
    header(f"GPU {torch.cuda.get_device_name()}", bw)
    sync = torch.cuda.synchronize
    rng = np.random.default_rng(0)
    img_np = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    img = torch.from_numpy(img_np).cuda()
    t_n = timeit(lambda: ops.rgb_to_lab(img, S), reps, sync)
    row("rgb_to_lab+resize", f"480x640 u8 -> 3x{S}x{S}", t_n, None, img_np.nbytes + 12 * S * S, bw)
    lab = ops.rgb_to_lab(img, S)
    t_n = timeit(lambda: ops.lab_to_rgb(lab), reps, sync)
    t_r = timeit(lambda: color.lab_to_rgb(lab[None]), reps, sync)
    row("lab_to_rgb", f"3x{S}x{S} f32", t_n, t_r, 2 * lab.numel() * 4, bw)
    boxes = np.array([[10, 20, 300, 400], [0, 0, 640, 480], [100, 100, 101, 101], [50, 60, 600, 90]] * (n // 4 or 1))[:n]
    crop_bytes = sum((x1 - x0) * (y1 - y0) * 3 for x0, y0, x1, y1 in boxes.tolist()) + n * S * S * 4
    t_n = timeit(lambda: ops.roi_crop_resize(img, boxes, S), reps, sync)
    row("roi_crop_resize", f"{n} boxes -> {n}x1x{S}x{S}", t_n, None, crop_bytes, bw)
    ab = torch.randn(2, S, S, device="cuda") * 0.3
    t_n = timeit(lambda: ops.compose(img, ab), reps, sync)
    row("compose", f"480x640 + 2x{S}x{S}", t_n, None, 2 * img_np.nbytes + ab.numel() * 4, bw)
    for dtype, tag in ((torch.float32, "fp32"), (torch.float16, "fp16")):
        tot_n = tot_r = 0.0
        print(f"-- fuse_instances {tag}, S={S}, N={n}, B=1")
        for name, C, div in FUSION_LAYERS:
            args = fuse_inputs(S, n, C, div, "cuda", dtype)
            t_n = timeit(lambda: ops.fuse_instances(*args), reps, sync)
            t_r = timeit(lambda: fuse.fuse_instances_reference(*args), max(1, reps // 3), sync)
            tot_n += t_n
            tot_r += t_r
            moved, padded = fuse_bytes(S, n, C, div, 2 if dtype == torch.float16 else 4)
            g = S // div
            row(f"fuse {name}", f"C={C:<3} {g:>3}x{g:<3} padded {padded / 2**20:5.1f} MB", t_n, t_r, moved, bw)
        print(f"fuse {tag}, 13 layers: native {tot_n:.3f} ms, reference {tot_r:.3f} ms ({tot_r / tot_n:.1f}x)")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer repetitions, smaller bandwidth probe")
    p.add_argument("--size", type=int, default=256, help="processing size S (default 256)")
    p.add_argument("--boxes", type=int, default=8, help="instances N (default 8)")
    p.add_argument("--no-gpu", action="store_true", help="skip the GPU table")
    a = p.parse_args(argv)
    reps = 3 if a.quick else 10
    print(f"instcolor ops benchmark: S={a.size}, N={a.boxes}, cuda compiled={ops.cuda_compiled()}, "
          f"cuda usable={ops.cuda_available()}")
    bench_cpu(a.size, a.boxes, reps, a.quick)
    if not a.no_gpu:
        if ops.cuda_available() and torch.cuda.is_available():
            bench_gpu(a.size, a.boxes, reps, a.quick)
        else:
            print(f"\n(GPU table skipped: {ops.cuda_unavailable_reason() or 'torch has no CUDA'})")


if __name__ == "__main__":
    main()
