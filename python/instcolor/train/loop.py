"""The three training stages of the paper, resumable at any step.

Stage order (paper, Sec. 3.4): ``full`` trains the full-image net; ``instance`` starts from
it and trains on box crops; ``fusion`` freezes both and trains only the 13 blend blocks of
the fusion net (whose backbone is the full-image net). Every run folder is a complete
weights folder in the official layout (``latest_net_GComp.pth`` full image,
``latest_net_G.pth`` instance, ``latest_net_GF.pth`` fusion) that
``Colorizer.from_pretrained`` loads and that the next stage takes as ``init``.

Run folder: ``config.json`` (what the run is), ``state.pt`` (step, trainable weights,
optimizer, AMP scaler, history; with ``adversarial`` the critics and their optimizer), the three ``latest_net_*.pth``, ``log.jsonl`` (one line
per validation), ``samples/latest.png`` (grey input | prediction | ground truth rows).
Resuming: run the same command again; the run continues from ``state.pt`` (with the
command's ``lr``: a changed learning rate is applied to the optimizer and noted in
``log.jsonl``). A run folder is marked as one (``.instcolor-output.json``); a non-empty
folder that is not a run folder is refused. ``state.pt`` holds tensors and plain Python
values only and is read with ``weights_only``. All files are replaced atomically, so a run killed at any moment loses at most the steps since its last
checkpoint (every ``checkpoint_seconds`` and on Ctrl-C / SIGTERM).

Determinism: the samples and augmentations of step ``t`` depend only on ``(seed, t)``
(:func:`instcolor.train.data.rng_for`), so ``k`` steps + resume + ``k`` steps equals ``2k``
steps on the same machine and thread count.
"""
from __future__ import annotations

import json
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .._fileio import OutputFolderError, atomic_path, claim_output_dir
from ..models import FusionNet, InstanceNet, SIGGRAPHBackbone, load_nets, load_state_dict_strict, save_official
from ..prepare import as_rgb_uint8
from . import data as D

STAGES = ("full", "instance", "fusion")
HUBER_DELTA = 1.0 / 110.0  # official: smooth-L1 on normalised ab, delta = 1/110
L1_WEIGHT = 10.0           # official: loss_G_L1_reg = 10 * mean(huber)
AB_QUANT, AB_MAX = 10.0, 110.0  # classification head: 23 x 23 = 529 ab bins
STATE_FILE, CONFIG_FILE, LOG_FILE = "state.pt", "config.json", "log.jsonl"
PRIOR_FILE = "ab_prior.json"


class TrainError(ValueError):
    """A training set-up that cannot run (bad data, missing init weights, config mismatch)."""


def claim_run_folder(out, inputs=(), option: str = "out") -> Path:
    """Check that ``out`` may be a training run folder and mark it as one: new, empty, or an
    earlier run (marked, or holding ``state.pt``), which training continues; never one of the
    ``inputs`` (data, validation photos, init weights, boxes) or a folder above one. Anything
    else raises :class:`TrainError` naming the folder."""
    out = Path(out)
    try:
        claim_output_dir(out, "train", inputs=[i for i in inputs if i], resume=True, option=option,
                         legacy_own=lambda p: (Path(p) / STATE_FILE).is_file())
    except OutputFolderError as e:
        raise TrainError(str(e)) from None
    return out


def _lr_text(lr) -> str:
    return f"{lr:g}" if isinstance(lr, (int, float)) else repr(lr)


@dataclass
class TrainConfig:
    """What a run is. Fields marked (resume) must stay the same when a run is resumed."""

    stage: str                       # (resume) 'full' | 'instance' | 'fusion'
    data: str                        # (resume) folder of colour photos
    out: str                         # run folder
    boxes: str | None = None         # (resume) boxes folder (official <stem>.npz) or JSON; instance/fusion
    init: str | None = None          # (resume) weights folder to start from (previous stage's run folder)
    width: float = 1.0               # (resume) channel width multiplier (full stage; later stages inherit)
    size: int = 256                  # (resume) training resolution S
    batch_size: int = 16             # (resume)
    lr: float = 1e-4
    steps: int = 10000               # stop after this many steps (may be raised on resume)
    hint_p: float = 0.125            # (resume) geometric stop probability of simulated hints; 1 = automatic only
    class_weight: float = 0.0        # (resume) weight of the ab-classification head loss (0 = off)
    rebalance: float = 0.5           # (resume) class rebalancing: uniform mix lambda of the prior (0 = plain cross-entropy)
    global_hints: bool = False       # (resume) train the SIGGRAPH'17 global hints branch (added when init lacks it)
    global_reveal: float = 0.5       # (resume) probability of revealing each global hint (histogram, saturation)
    hint_uniform: float = 0.0        # (resume) probability that a simulated hint is placed uniformly (else normal)
    max_instances: int = 8           # (resume) fusion stage: boxes per image
    keep_blend: bool = False         # (resume) fusion stage: start the blend blocks from init's fusion net (else fresh)
    adversarial: bool = False        # (resume) SCGAN: WGAN-GP PatchGAN critics on (L, ab) and the saliency-weighted image
    adv_weight: float = 0.01         # (resume) weight of the generator's adversarial loss after the warm-up
    warmup_steps: int = 1000         # (resume) generator steps with the reconstruction loss only (critics train already)
    d_lr: float = 1e-4               # (resume) Adam learning rate of the critics
    seed: int = 0                    # (resume)
    device: str = "cpu"
    amp: str = "auto"                # 'auto' (fp16 on CUDA, bf16 on CPUs that have it), 'off', 'bf16', 'fp16'
    threads: int = 0                 # torch CPU threads (0 = leave torch's default)
    bn_batches: int = 50             # full / instance stage: batches for the final BatchNorm statistics (0 = off)
    checkpoint_seconds: float = 300.0
    workers: int = 0                 # sample-making processes (0 = one background thread); samples do not depend on it
    time_limit: float = 0.0          # seconds of training in this invocation, then finish as at ``steps`` (0 = none)
    val: str | None = None           # folder of validation photos (default: 16 training photos)
    val_every: int = 500
    val_images: int = 16

    RESUME_FIELDS = ("stage", "data", "boxes", "init", "width", "size", "batch_size", "hint_p",
                     "class_weight", "rebalance", "global_hints", "global_reveal", "hint_uniform",
                     "max_instances", "keep_blend", "seed", "adversarial", "adv_weight", "warmup_steps", "d_lr")
    ADVERSARIAL_FIELDS = ("adv_weight", "warmup_steps", "d_lr")

    def check(self) -> None:
        from ..prepare import check_size

        if self.stage not in STAGES:
            raise TrainError(f"stage must be one of {', '.join(STAGES)}, got {self.stage!r}")
        try:
            check_size(self.size)
        except ValueError as e:
            raise TrainError(f"size: {e}") from None
        if not (0 < self.width <= 1):
            raise TrainError(f"width must be in (0, 1], got {self.width}")
        if not (0 < self.hint_p <= 1):
            raise TrainError(f"hint_p must be in (0, 1], got {self.hint_p}")
        for name in ("rebalance", "global_reveal", "hint_uniform"):
            if not (0 <= getattr(self, name) <= 1):
                raise TrainError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.class_weight < 0:
            raise TrainError(f"class_weight must be >= 0, got {self.class_weight}")
        if int(self.workers) < 0:
            raise TrainError(f"workers must be >= 0, got {self.workers}")
        if self.time_limit < 0:
            raise TrainError(f"time_limit must be >= 0 seconds, got {self.time_limit}")
        for name in ("batch_size", "steps", "val_every", "val_images", "max_instances"):
            if int(getattr(self, name)) < 1:
                raise TrainError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise TrainError(f"lr must be > 0, got {self.lr}")
        if self.adversarial:
            from .adversarial import MIN_SIZE

            if self.d_lr <= 0:
                raise TrainError(f"d_lr must be > 0, got {self.d_lr}")
            if self.adv_weight < 0:
                raise TrainError(f"adv_weight must be >= 0, got {self.adv_weight}")
            if self.warmup_steps < 0:
                raise TrainError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
            if self.size < MIN_SIZE:
                raise TrainError(f"adversarial training needs size >= {MIN_SIZE} (the critics' patches), got {self.size}")
        if self.amp not in ("auto", "off", "bf16", "fp16"):
            raise TrainError(f"amp must be auto, off, bf16 or fp16, got {self.amp!r}")
        if self.stage != "full" and not self.init:
            raise TrainError(f"the {self.stage} stage starts from the previous stage's weights: give init "
                             f"(--init RUN_DIR of the {'full' if self.stage == 'instance' else 'instance'} stage)")
        if self.stage != "full" and not self.boxes:
            raise TrainError(f"the {self.stage} stage needs boxes: give boxes (a folder of <stem>.npz or a JSON "
                             "file, e.g. written by `instcolor detect`)")


# ----------------------------------------------------------------------------- sample-making processes
_FORKED = None  # the Trainer whose samples a forked worker makes (set in the parent just before the fork)


def _worker_init() -> None:
    torch.set_num_threads(1)  # each worker makes whole samples on one core
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle (it checkpoints, then closes us)
    # Pool.terminate() ends a worker with SIGTERM: a Python handler inherited from the parent (Ray's
    # driver installs one) would run instead, and the pool would wait for that worker forever
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _worker_sample(job):
    k, item = job
    t = _FORKED
    return t._sample(t.index, t.boxes, item, D.rng_for(t.cfg.seed, 1, k))


class SampleFeeder:
    """Training batches made by ``workers`` forked processes, ``ahead`` steps in advance.

    A sample depends only on ``(seed, k)`` (its position in the run), never on which process
    made it, so a batch equals :meth:`Trainer.make_batch`'s for the same step. The workers only
    read photos and use numpy/PIL; they never touch torch's devices (forking after CUDA is set up
    is safe on that condition, as for ``torch.utils.data.DataLoader``)."""

    def __init__(self, trainer: "Trainer", workers: int, ahead: int = 4):
        import multiprocessing as mp

        global _FORKED
        self.trainer, self.ahead, self.pending = trainer, max(1, int(ahead)), {}
        self.chunk = max(1, trainer.cfg.batch_size // (2 * workers))
        _FORKED = trainer
        try:
            self.pool = mp.get_context("fork").Pool(int(workers), initializer=_worker_init)
        finally:
            _FORKED = None

    def _request(self, step: int, last: int) -> None:
        if step < last and step not in self.pending:
            jobs = self.trainer.batch_items(step)
            self.pending[step] = self.pool.map_async(_worker_sample, jobs, chunksize=self.chunk)

    def get(self, step: int, last: int) -> dict:
        """The batch of ``step``; queues steps up to ``step + ahead`` (none at or past ``last``)."""
        for s in range(step, min(step + self.ahead + 1, last)):
            self._request(s, last)
        if step not in self.pending:
            self._request(step, step + 1)
        samples = self.pending.pop(step).get()
        return D.collate(samples)

    def close(self) -> None:
        self.pool.terminate()
        self.pool.join()
        self.pending.clear()


# ----------------------------------------------------------------------------- losses
def huber_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Official regression loss: 10 * mean over pixels of the per-pixel smooth-L1 (delta 1/110)
    summed over the two ab channels. pred, target (N, 2, S, S)."""
    per = F.smooth_l1_loss(pred.float(), target.float(), reduction="none", beta=HUBER_DELTA)
    return L1_WEIGHT * per.sum(dim=1).mean()


def ab_classes(ab: torch.Tensor) -> torch.Tensor:
    """Normalised ab (N, 2, h, w) -> (N, h, w) int64 bin index on the 23 x 23 grid of step 10."""
    n = int(2 * AB_MAX / AB_QUANT + 1)
    idx = torch.round((ab * 110.0 + AB_MAX) / AB_QUANT).clamp(0, n - 1).long()
    return idx[:, 0] * n + idx[:, 1]


def class_loss(logits: torch.Tensor, ab: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy of the classification head (N, 529, S/4, S/4) against the ground truth's bins
    at S/4 (nearest), each pixel weighted by its bin's rebalancing weight when ``weights`` (529,)
    is given (Zhang et al. 2016, Eq. 2)."""
    target = ab_classes(ab[:, :, ::4, ::4])
    per = F.cross_entropy(logits, target, reduction="none")
    if weights is None:
        return per.mean()
    return (per * weights[target]).mean()


# ----------------------------------------------------------------------------- nets per stage
def _fresh_fusion(full: SIGGRAPHBackbone, seed: int) -> FusionNet:
    """Fusion net with the full-image net as backbone and freshly initialised blend blocks."""
    torch.manual_seed(seed + 3)
    fusion = FusionNet(full.width, global_hints=full.global_net is not None)
    copy_backbone(full, fusion)
    return fusion


def copy_backbone(full: SIGGRAPHBackbone, fusion: FusionNet) -> None:
    """Give the fusion net the full-image net's backbone weights (its blend blocks stay)."""
    backbone = full.state_dict()
    missing = [k for k in fusion.state_dict() if k not in backbone and not k.startswith("weight_layer")]
    if missing:
        raise TrainError(f"full-image net does not fit the fusion backbone: {missing[:4]}")
    fusion.load_state_dict(backbone, strict=False)


def add_global_branch(nets: dict[str, nn.Module], seed: int) -> None:
    """Give the full-image and fusion nets a (zero-initialised) global hints branch where they
    lack one; the fusion net's is the full-image net's (same weights)."""
    from ..models.backbone import GlobalHintsNet, channels

    full = nets["full"]
    if full.global_net is None:
        torch.manual_seed(seed + 5)
        full.global_net = GlobalHintsNet(channels(full.width)[512])
    nets["fusion"].global_net = GlobalHintsNet(channels(full.width)[512])
    nets["fusion"].global_net.load_state_dict(full.global_net.state_dict())


def build_nets(cfg: TrainConfig) -> dict[str, nn.Module]:
    """The three nets at the start of the stage (before any resume). The full stage starts from
    scratch, or fine-tunes ``init`` (any weights folder, e.g. a bundle) when given."""
    if cfg.stage == "full" and not cfg.init:
        torch.manual_seed(cfg.seed)
        full = SIGGRAPHBackbone(cfg.width, global_hints=cfg.global_hints)
        instance = InstanceNet(cfg.width)
        instance.load_state_dict(full.state_dict(), strict=False)
        return {"full": full, "instance": instance, "fusion": _fresh_fusion(full, cfg.seed)}
    try:
        nets = load_nets(cfg.init)
    except ValueError as e:
        raise TrainError(f"init: {e}") from None
    if cfg.global_hints:
        add_global_branch(nets, cfg.seed)
    if cfg.stage == "full":
        return nets
    if cfg.stage == "instance":
        load_state_dict_strict(nets["instance"], _without_global(nets["full"].state_dict()), f"{cfg.init} full-image net")
    else:
        if cfg.keep_blend:  # fine-tune init's blend blocks on (init's) full-image backbone
            copy_backbone(nets["full"], nets["fusion"])
        else:
            nets["fusion"] = _fresh_fusion(nets["full"], cfg.seed)
    return nets


def _without_global(state: dict) -> dict:
    """A full-image net's state without the global hints branch (the instance net has none)."""
    return {k: v for k, v in state.items() if not k.startswith("global_net.")}


def trainable(cfg: TrainConfig, nets: dict[str, nn.Module]) -> list[nn.Parameter]:
    """Parameters the stage trains; the rest get requires_grad False."""
    for net in nets.values():
        net.requires_grad_(False)
    if cfg.stage in ("full", "instance"):  # the classification head only with its loss
        params = [p for n, p in nets[cfg.stage].named_parameters()
                  if cfg.class_weight > 0 or not n.startswith("model_class")]
    else:
        from ..models.fusion import BLOCK_NAMES

        params = [p for name in BLOCK_NAMES.values() for p in nets["fusion"].get_submodule(name).parameters()]
    for p in params:
        p.requires_grad_(True)
    return params


# ----------------------------------------------------------------------------- trainer
def _amp_dtype(cfg: TrainConfig, device: torch.device):
    if cfg.amp == "off":
        return None
    if cfg.amp == "fp16" or (cfg.amp == "auto" and device.type == "cuda"):
        return torch.float16
    if cfg.amp == "bf16":
        return torch.bfloat16
    # auto on CPU: bf16 when the CPU has native bf16 (AVX512-BF16 / AMX), else fp32
    try:
        return torch.bfloat16 if torch.ops.mkldnn._is_mkldnn_bf16_supported() else None
    except (AttributeError, RuntimeError):
        return None


class Trainer:
    """One stage's run. ``Trainer(cfg).run()`` trains until ``cfg.steps`` (resuming if the run
    folder holds a state) and returns the final history entry."""

    def __init__(self, cfg: TrainConfig, progress: bool = True):
        cfg.check()
        self.cfg, self.progress = cfg, progress
        self.out = Path(cfg.out)
        self._check_resume_config()
        claim_run_folder(self.out, self._input_paths())
        if cfg.threads:
            torch.set_num_threads(int(cfg.threads))
        try:
            self.device = torch.device(cfg.device)
        except (RuntimeError, TypeError) as e:
            raise TrainError(f"device: not a torch device: {cfg.device!r} ({e})") from None
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise TrainError(f"device={cfg.device!r} but PyTorch sees no CUDA GPU")
        self.amp_dtype = _amp_dtype(cfg, self.device)
        if cfg.global_hints and cfg.stage == "instance":
            raise TrainError("global hints are a full-image input: train them in the full stage (and keep "
                             "--global-hints for the fusion stage); the instance net has no global branch")

        self.index = D.PhotoIndex.build(cfg.data, cache=self.out / "photos.json", progress=progress)
        self.boxes = None
        if cfg.boxes:
            from ..detect import BoxesFile

            try:
                self.boxes = D.load_index_boxes(self.index, BoxesFile(cfg.boxes))
            except (FileNotFoundError, ValueError) as e:
                raise TrainError(str(e)) from None
        self.items = self._items()
        if not self.items:
            raise TrainError(f"the {cfg.stage} stage has nothing to train on: no photo in {cfg.data} has boxes "
                             f"of at least {D.MIN_BOX_SIDE} px in {cfg.boxes}")
        self.val_items = self._val_items()
        self.class_weights = self._class_weights() if cfg.class_weight > 0 else None

        self.nets = build_nets(cfg)
        # mixed precision runs fastest on NHWC tensors (oneDNN bf16 on CPU, tensor cores on CUDA)
        self.memory_format = torch.channels_last if self.amp_dtype is not None else torch.contiguous_format
        for net in self.nets.values():
            net.to(self.device, memory_format=self.memory_format)
        self.params = trainable(cfg, self.nets)
        self.opt = torch.optim.Adam(self.params, lr=cfg.lr, betas=(0.9, 0.999))
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16 and self.device.type == "cuda")
        self.adversary = None
        if cfg.adversarial:  # training-only critics, sized like the generator (kept in state.pt, not the weights)
            from .adversarial import Adversary

            self.adversary = Adversary(self.nets["full"].width, cfg.d_lr, seed=cfg.seed, device=self.device)
        self.step, self.elapsed, self.history = 0, 0.0, []
        self.bn_calibrated = False
        self._load_state()
        self._stop = False

    # -------------------------------------------------------------- set-up
    def _input_paths(self) -> list[str]:
        """What the run reads (its folder must be none of them); boxes that ``train --detector``
        wrote into the run folder itself are part of the run."""
        cfg = self.cfg
        paths = [cfg.data, cfg.val, cfg.init]
        if cfg.boxes and not Path(cfg.boxes).resolve().is_relative_to(self.out.resolve()):
            paths.append(cfg.boxes)
        return [p for p in paths if p]

    def _check_resume_config(self) -> None:
        f = self.out / CONFIG_FILE
        if not self.out.is_dir() or not f.is_file() or not (self.out / STATE_FILE).is_file():
            return
        try:
            old = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise TrainError(f"{f}: not a readable run config ({e})") from None
        if not isinstance(old, dict):
            raise TrainError(f"{f}: not a run config (expected a JSON object)")
        new = asdict(self.cfg)
        old = {k: old.get(k, getattr(TrainConfig, k, None)) for k in TrainConfig.RESUME_FIELDS}  # older runs lack newer fields
        unused = () if old["adversarial"] or new["adversarial"] else TrainConfig.ADVERSARIAL_FIELDS  # only matter with it
        diff = [f"{k}: {old[k]!r} -> {new[k]!r}" for k in TrainConfig.RESUME_FIELDS if old[k] != new[k] and k not in unused]
        if diff:
            raise TrainError(f"{self.out} holds a run with different settings ({'; '.join(diff)}); "
                             "resume with the same settings or choose another --out")

    def _items(self) -> list:
        """Training items: photo indices (full, fusion) or (photo, box) pairs (instance)."""
        n = len(self.index.names)
        if self.cfg.stage == "full":
            return list(range(n))
        if self.cfg.stage == "instance":
            return [(i, j) for i in range(n) for j in range(len(self.boxes[i]))]
        return list(range(n))  # fusion: photos without boxes take the full-image path

    def _val_items(self) -> list:
        """Up to ``val_images`` validation items spread evenly over the validation photos (``val``,
        else the training photos); sets ``val_index`` / ``val_boxes`` for :meth:`_sample`."""
        cfg = self.cfg
        self.val_index, self.val_boxes = self.index, self.boxes
        if cfg.val:
            self.val_index = D.PhotoIndex.build(cfg.val, cache=self.out / "val_photos.json", progress=self.progress)
            self.val_boxes = None
            if cfg.stage != "full":
                from ..detect import BoxesFile

                self.val_boxes = D.load_index_boxes(self.val_index, BoxesFile(cfg.boxes))
        n = len(self.val_index.names)
        if cfg.stage == "instance":  # the first box of each photo that has one
            candidates = [(i, 0) for i in range(n) if len(self.val_boxes[i])]
        else:
            candidates = list(range(n))
        if not candidates:
            return []
        picks = np.linspace(0, len(candidates) - 1, num=min(cfg.val_images, len(candidates))).round().astype(int)
        return [candidates[k] for k in picks.tolist()]

    def _class_weights(self) -> torch.Tensor | None:
        """Per-bin weights of the classification loss: class rebalancing (Zhang et al. 2016) from
        the training photos' smoothed ab prior mixed with a uniform prior (``rebalance`` = lambda),
        or None for plain cross-entropy (``rebalance`` 0). The counts are kept in the run folder
        (``ab_prior.json``) so a resumed run does not read every photo again."""
        from ..distribution import rebalance_weights, smoothed_prior

        if self.cfg.rebalance <= 0:
            return None
        f = self.out / PRIOR_FILE
        counts = None
        if f.is_file():
            try:
                data = json.loads(f.read_text(encoding="utf-8"))
                counts = np.asarray(data["counts"], np.float64)
                if counts.shape != (529,) or data.get("photos") != len(self.index.names):
                    counts = None
            except (OSError, ValueError, KeyError, TypeError):
                counts = None
        if counts is None:
            counts = D.ab_counts(self.index, progress=self.progress)
            with atomic_path(f) as tmp:
                tmp.write_text(json.dumps({"photos": len(self.index.names), "size": 32,
                                           "counts": counts.tolist()}))
        w = rebalance_weights(smoothed_prior(counts), self.cfg.rebalance)
        return torch.from_numpy(w).to(self.device)

    # -------------------------------------------------------------- data
    def _sample(self, index, boxes, item, rng) -> D.Sample:
        s = self._make_sample(index, boxes, item, rng)
        if self.cfg.adversarial and rng is not None:  # training samples (validation is reconstruction only)
            D.add_saliency(s)
        return s

    def _make_sample(self, index, boxes, item, rng) -> D.Sample:
        cfg = self.cfg
        if cfg.stage == "instance":
            i, j = item
            return D.make_instance_sample(as_rgb_uint8(index.path(i)), boxes[i][j], cfg.size, rng)
        rgb = as_rgb_uint8(index.path(item))
        reveal = cfg.global_reveal if cfg.global_hints else None
        if cfg.stage == "full":
            return D.make_full_sample(rgb, cfg.size, rng, cfg.hint_p, hint_uniform=cfg.hint_uniform,
                                      global_reveal=reveal)
        b = boxes[item][-cfg.max_instances:] if boxes is not None else np.zeros((0, 4), np.int64)
        return D.make_fusion_sample(rgb, b, cfg.size, rng, cfg.hint_p, hint_uniform=cfg.hint_uniform,
                                    global_reveal=reveal)

    def batch_items(self, step: int) -> list:
        """The items of training step ``step``: consecutive slices of per-epoch permutations."""
        n, bs = len(self.items), self.cfg.batch_size
        out = []
        for k in range(step * bs, (step + 1) * bs):
            epoch, pos = divmod(k, n)
            perm = self._perm(epoch)
            out.append((k, self.items[perm[pos]]))
        return out

    def _perm(self, epoch: int) -> np.ndarray:
        if getattr(self, "_perm_epoch", None) != epoch:
            self._perm_cache = D.rng_for(self.cfg.seed, 0, epoch).permutation(len(self.items))
            self._perm_epoch = epoch
        return self._perm_cache

    def make_batch(self, step: int) -> dict:
        samples = [self._sample(self.index, self.boxes, item, D.rng_for(self.cfg.seed, 1, k))
                   for k, item in self.batch_items(step)]
        return D.collate(samples)

    # -------------------------------------------------------------- model step
    def _autocast(self):
        if self.amp_dtype is None:
            return torch.autocast(self.device.type, enabled=False)
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def forward(self, batch: dict, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (loss, predicted ab (B, 2, S, S))."""
        loss, pred, _ = self._forward(batch, train)
        return loss, pred

    def _forward(self, batch: dict, train: bool) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """-> (reconstruction loss, predicted ab (B, 2, S, S) fp32, the batch's tensors on the device)."""
        cfg, dev = self.cfg, self.device
        def put(v):
            if v.ndim == 4:
                return v.to(dev).contiguous(memory_format=self.memory_format)
            return v.to(dev)

        t = {k: (put(v) if isinstance(v, torch.Tensor) else [x.to(dev) for x in v]) for k, v in batch.items()}
        want_class = cfg.class_weight > 0
        g = t.get("global_input")
        with self._autocast():
            if cfg.stage in ("full", "instance"):
                net = self.nets[cfg.stage]
                net.train(train)
                pred, logits = net.heads(t["L"], t["hint_ab"], t["hint_mask"], global_input=g, with_class=want_class)
            else:
                inst, fusion = self.nets["instance"], self.nets["fusion"]
                inst.eval()
                fusion.eval()  # backbone BN frozen; blend blocks have no BN / dropout
                M, S = t["crop_L"].shape[0], cfg.size
                with torch.no_grad():
                    _, inst_feats = inst(t["crop_L"], torch.zeros((M, 2, S, S), device=dev),
                                         torch.full((M, 1, S, S), -0.5, device=dev))
                pred, logits = fusion.fused_heads(t["L"], t["hint_ab"], t["hint_mask"], inst_feats, t["box_info"],
                                                  t["inst_image"], global_input=g, with_class=want_class)
        loss = huber_loss(pred, t["ab"])
        if logits is not None:
            loss = loss + cfg.class_weight * class_loss(logits.float(), t["ab"], self.class_weights)
        return loss, pred.float(), t

    def train_step(self, batch: dict) -> float:
        """One step; returns the reconstruction loss (+ classification loss). With ``adversarial``
        the critics take one step on this batch first, and after ``warmup_steps`` steps the
        generator's loss adds ``adv_weight`` times the adversarial loss."""
        self.opt.zero_grad(set_to_none=True)
        loss, pred, t = self._forward(batch, train=True)
        if not torch.isfinite(loss):
            raise TrainError(f"loss became {loss.item()} at step {self.step}; lower the learning rate")
        total = loss
        if self.adversary is not None:
            L = t["L"]  # the grey input the generator saw (the crop in the instance stage)
            eps = torch.from_numpy(D.rng_for(self.cfg.seed, 2, self.step).random(pred.shape[0]).astype(np.float32))
            d = self.adversary.critic_step(L, t["ab"], pred.detach(), t["saliency"], eps)
            if not np.isfinite(d["adv_d_loss"]):
                raise TrainError(f"the critics' loss became {d['adv_d_loss']} at step {self.step}; lower --d-lr")
            if self.step >= self.cfg.warmup_steps and self.cfg.adv_weight > 0:
                total = loss + self.cfg.adv_weight * self.adversary.generator_loss(L, pred, t["saliency"])
                if not torch.isfinite(total):
                    raise TrainError(f"adversarial loss became {total.item()} at step {self.step}; lower --adv-weight")
        self.scaler.scale(total).backward()
        self.scaler.step(self.opt)
        self.scaler.update()
        return float(loss.detach())

    # -------------------------------------------------------------- validation and files
    @torch.no_grad()
    def validate(self) -> dict:
        if not self.val_items:
            return {}
        samples = [self._sample(self.val_index, self.val_boxes, item, None) for item in self.val_items]
        losses, preds = [], []
        for k in range(0, len(samples), self.cfg.batch_size):
            chunk = samples[k:k + self.cfg.batch_size]
            loss, pred = self.forward(D.collate(chunk), train=False)
            losses.append(float(loss) * len(chunk))
            preds.append(pred.cpu().numpy())
        pred = np.concatenate(preds)
        self._write_grid(samples[:8], pred[:8])
        return {"val_loss": sum(losses) / len(samples)}

    def _write_grid(self, samples, pred) -> None:
        from PIL import Image

        from .. import color

        rows = []
        for s, p in zip(samples, pred):
            L = torch.from_numpy(s.L)[None]
            grey = torch.cat([L, torch.zeros_like(L), torch.zeros_like(L)], 1)
            outs = [color.lab_to_rgb(x) for x in (grey, torch.cat([L, torch.from_numpy(p)[None]], 1),
                                                   torch.cat([L, torch.from_numpy(s.ab)[None]], 1))]
            rows.append(np.concatenate([color.to_uint8(o)[0] for o in outs], axis=1))
        grid = np.concatenate(rows, axis=0)
        (self.out / "samples").mkdir(exist_ok=True)
        with atomic_path(self.out / "samples" / "latest.png") as tmp:
            Image.fromarray(grid).save(tmp, format="PNG")

    def save(self) -> None:
        """Checkpoint: official weights files, then the resumable state (both atomic)."""
        if self.cfg.stage == "full":  # the later stages start from the full-image net
            self.nets["instance"].load_state_dict(_without_global(self.nets["full"].state_dict()))
            copy_backbone(self.nets["full"], self.nets["fusion"])
        save_official(self.out, self.nets)
        trained = self.cfg.stage
        state = {"step": self.step, "elapsed": self.elapsed, "history": self.history,
                 "bn_calibrated": self.bn_calibrated,
                 "net": {k: v.detach().cpu() for k, v in self.nets[trained].state_dict().items()},
                 "opt": self.opt.state_dict(), "scaler": self.scaler.state_dict(), "config": asdict(self.cfg)}
        if self.adversary is not None:  # critics and their optimizer: training-only, never in the weights files
            state["adversary"] = self.adversary.state_dict()
        with atomic_path(self.out / STATE_FILE) as tmp:
            torch.save(state, tmp)
        with atomic_path(self.out / CONFIG_FILE) as tmp:
            tmp.write_text(json.dumps(asdict(self.cfg), indent=2))

    def _load_state(self) -> None:
        """Resume from ``state.pt`` (read with ``weights_only``: tensors and plain values only), then
        apply this run's learning rate to every parameter group (the optimizer state holds the rate
        it was saved with; a changed ``--lr`` on resume is meant to take effect)."""
        from ..models.checkpoint import CheckpointError, safe_torch_load

        f = self.out / STATE_FILE
        self.lr_change = None
        if not f.is_file():
            return
        try:
            state = safe_torch_load(f, "training state")
            if not isinstance(state, dict) or not {"net", "opt", "scaler", "step", "elapsed", "history"} <= set(state):
                raise CheckpointError(f"{f}: not a training state (expected step, net, opt, scaler, ...)")
            load_state_dict_strict(self.nets[self.cfg.stage], state["net"], str(f))
            self.opt.load_state_dict(state["opt"])
            self.scaler.load_state_dict(state["scaler"])
            self.step, self.elapsed, self.history = int(state["step"]), float(state["elapsed"]), list(state["history"])
            self.bn_calibrated = bool(state.get("bn_calibrated", False))
            if self.adversary is not None:
                if not isinstance(state.get("adversary"), dict):
                    raise CheckpointError(f"{f}: the run was not trained with --adversarial (no critics saved)")
                self.adversary.load_state_dict(state["adversary"], f"{f} critics")
        except CheckpointError as e:
            raise TrainError(f"cannot resume: {e}") from None
        except (KeyError, TypeError, ValueError, RuntimeError) as e:  # state that does not fit this optimizer / run
            raise TrainError(f"cannot resume from {f}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
        old = [group["lr"] for group in self.opt.param_groups]
        if any(lr != self.cfg.lr for lr in old):
            for group in self.opt.param_groups:
                group["lr"] = self.cfg.lr
            self.lr_change = {"step": self.step, "lr_from": old[0] if len(set(old)) == 1 else old, "lr_to": self.cfg.lr}

    @torch.no_grad()
    def recalibrate_batchnorm(self, make_batch=None) -> None:
        """Replace the trained net's BatchNorm running statistics by their plain average over
        ``bn_batches`` training-distribution batches (drawn as steps ``steps``, ``steps + 1``, ...).
        The running averages of training follow the last few batches (with and without hints
        the first layers see different statistics), which makes eval-mode quality swing from
        checkpoint to checkpoint; the average over many batches does not."""
        net = self.nets[self.cfg.stage]
        bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        momenta = [m.momentum for m in bns]
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative average
        try:
            for k in range(self.cfg.bn_batches):
                self.forward((make_batch or self.make_batch)(self.cfg.steps + k), train=True)
        finally:
            for m, mom in zip(bns, momenta):
                m.momentum = mom
        self.bn_calibrated = True

    def _record(self, entry: dict) -> None:
        """Append a validation entry to the history and to ``log.jsonl``."""
        self.history.append(entry)
        with open(self.out / LOG_FILE, "a") as fh:
            fh.write(json.dumps(entry) + "\n")

    # -------------------------------------------------------------- loop
    def _needs_bn(self) -> bool:
        return (self.cfg.stage in ("full", "instance") and self.cfg.bn_batches > 0
                and self.step >= self.cfg.steps and not self.bn_calibrated)

    def _on_signal(self, signum, frame):
        self._stop = True

    def run(self) -> dict:
        from tqdm import tqdm

        cfg = self.cfg
        if self.step >= cfg.steps and not self._needs_bn():
            if self.progress:
                print(f"instcolor: {self.out} is already at step {self.step} >= {cfg.steps}; nothing to do",
                      file=sys.stderr)
            return self.history[-1] if self.history else {}
        if self.lr_change is not None:
            self._record(dict(self.lr_change))
            if self.progress:
                print(f"instcolor: resuming at step {self.step} with lr {_lr_text(self.cfg.lr)} "
                      f"(was {_lr_text(self.lr_change['lr_from'])})", file=sys.stderr)
            self.lr_change = None
        old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            for s in old:
                signal.signal(s, self._on_signal)
        except ValueError:  # not the main thread: no signal handling
            old = {}
        feeder = SampleFeeder(self, cfg.workers) if cfg.workers > 0 else None
        pool = ThreadPoolExecutor(max_workers=1)

        def fetch(step):  # a future-like object with .result(): the batch of ``step``
            if feeder is not None:
                return pool.submit(feeder.get, step, cfg.steps)
            return pool.submit(self.make_batch, step)

        bar = tqdm(total=cfg.steps, initial=self.step, desc=f"train {cfg.stage}", unit="step",
                   disable=not self.progress, file=sys.stderr, dynamic_ncols=True)
        last_ckpt, ema, rate = time.monotonic(), None, None
        started = time.monotonic()
        try:
            nxt = fetch(self.step) if self.step < cfg.steps else None
            while self.step < cfg.steps and not self._stop:
                t0 = time.monotonic()
                batch = nxt.result()
                if self.step + 1 < cfg.steps:
                    nxt = fetch(self.step + 1)
                loss = self.train_step(batch)
                self.step += 1
                self.bn_calibrated = False
                dt = time.monotonic() - t0
                self.elapsed += dt
                ema = loss if ema is None else 0.98 * ema + 0.02 * loss
                rate = cfg.batch_size / dt if rate is None else 0.95 * rate + 0.05 * cfg.batch_size / dt
                bar.set_postfix(loss=f"{ema:.4f}", img_s=f"{rate:.1f}", refresh=False)
                bar.update(1)
                if cfg.time_limit and self.step < cfg.steps and time.monotonic() - started >= cfg.time_limit:
                    # end here as if --steps had said so: final validation, BatchNorm statistics, checkpoint
                    self._record({"step": self.step, "time_limit_s": cfg.time_limit, "steps_from": cfg.steps})
                    bar.write(f"instcolor: time limit of {cfg.time_limit:g} s reached at step {self.step}; "
                              f"finishing the run here (raise --steps to continue it later)", file=sys.stderr)
                    cfg.steps = self.step
                    bar.total = self.step
                if self.step % cfg.val_every == 0 or self.step == cfg.steps:
                    entry = {"step": self.step, "train_loss": ema, "images_per_s": rate,
                             "elapsed_s": round(self.elapsed, 1), **self.validate()}
                    if self.adversary is not None:  # running averages of the critics' terms
                        entry.update(self.adversary.stats)
                    self._record(entry)
                    bar.write(f"step {self.step}: " + ", ".join(f"{k} {v:.4g}" for k, v in entry.items()
                                                                if k != "step"), file=sys.stderr)
                if time.monotonic() - last_ckpt >= cfg.checkpoint_seconds or self.step == cfg.steps:
                    self.save()
                    last_ckpt = time.monotonic()
            if not self._stop and self._needs_bn():
                bar.write(f"instcolor: BatchNorm statistics over {cfg.bn_batches} batches", file=sys.stderr)
                last = cfg.steps + cfg.bn_batches
                self.recalibrate_batchnorm(None if feeder is None else (lambda step: feeder.get(step, last)))
                self._record({"step": self.step, "bn_recalibrated": cfg.bn_batches, **self.validate()})
                self.save()
            if self._stop:
                self.save()
                bar.write(f"instcolor: stopped at step {self.step}; run the same command to resume", file=sys.stderr)
        finally:
            bar.close()
            pool.shutdown(wait=True, cancel_futures=True)
            if feeder is not None:
                feeder.close()
            for s, h in old.items():
                signal.signal(s, h)
        return self.history[-1] if self.history else {"step": self.step}


def train(cfg: TrainConfig, progress: bool = True) -> dict:
    """Train one stage (resuming from ``cfg.out`` if it holds a run). Returns the last log entry."""
    return Trainer(cfg, progress=progress).run()
