"""``instcolor bundle --weights DIR -o OUTDIR [--info FILE.json] [--force]``: convert weights to a bundle.

Wire into the CLI with ``add_bundle_parser(subparsers)`` (sets ``func=cmd_bundle``).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def add_bundle_parser(subparsers):
    """Add the ``bundle`` sub-command to ``subparsers`` (from ``ArgumentParser.add_subparsers``)."""
    p = subparsers.add_parser(
        "bundle", help="convert weights to a compact bundle (model.safetensors + config.json)",
        description="Convert weights (official layout or a bundle) into an instcolor bundle: one float16 "
                    "safetensors file with the three nets, tensors shared between nets stored once, "
                    "plus config.json with the width and a sha256 of the weights file.")
    p.add_argument("--weights", required=True, metavar="DIR",
                   help="folder with latest_net_G.pth, latest_net_GF.pth, latest_net_GComp.pth, or a bundle")
    p.add_argument("-o", "--output-dir", required=True, metavar="OUTDIR",
                   help="folder for the bundle (new or empty; an earlier bundle there needs --force)")
    p.add_argument("--info", metavar="FILE.json",
                   help="JSON object stored as the bundle's 'info' (default: kept from a bundle input, else none); "
                        "from a bundle input the keys that describe the weights themselves (class_rebalance, "
                        "decode) are carried over unless FILE.json sets them")
    p.add_argument("--force", action="store_true",
                   help="replace an earlier bundle in OUTDIR (never a folder holding other files)")
    p.set_defaults(func=cmd_bundle)
    return p


def _with_class_rebalance(src, info):
    """A training run folder whose classification head was trained with class rebalancing
    (``ab_prior.json`` + ``rebalance`` in its config) passes that prior on in ``info.class_rebalance``,
    so that the bundle's colour suggestions can undo the rebalancing (see
    :func:`instcolor.colorizer.class_log_weights`). ``info`` that already has one is kept as it is."""
    import json

    if isinstance(info, dict) and "class_rebalance" in info:
        return info
    try:
        config = json.loads((Path(src) / "config.json").read_text(encoding="utf-8"))
        prior = json.loads((Path(src) / "ab_prior.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return info
    if not isinstance(config, dict) or not isinstance(prior, dict) or "info" in config:
        return info
    if not (config.get("rebalance", 0) or 0) > 0 or not (config.get("class_weight", 0) or 0) > 0:
        return info
    from ..distribution import DEFAULT_PRIOR_SIGMA

    spec = {"counts": prior.get("counts"), "photos": prior.get("photos"), "mix": config["rebalance"],
            "sigma": DEFAULT_PRIOR_SIGMA}
    return {**(info or {}), "class_rebalance": spec}


#: info keys that describe the weights, not their history: a new --info keeps them from a bundle input
WEIGHTS_INFO_KEYS = ("class_rebalance", "decode")


def cmd_bundle(args) -> int:
    from .._fileio import OutputFolderError, claim_output_dir, write_output_marker
    from ..errors import UsageError
    from .bundle import BUNDLE_FILES, CONFIG_FILE, MODEL_FILE, bundle_info, is_bundle, save_bundle
    from .checkpoint import OFFICIAL_FILES, CheckpointError, load_nets

    src, out = Path(args.weights), Path(args.output_dir)
    info = None
    if getattr(args, "info", None):
        try:
            info = json.loads(Path(args.info).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise UsageError(f"--info {args.info}: cannot read a JSON object ({e})") from None
        if not isinstance(info, dict):
            raise UsageError(f"--info {args.info}: expected a JSON object, got {type(info).__name__}")
    try:
        src_is_bundle = is_bundle(src)
        nets = load_nets(src)
        if src_is_bundle:
            old = bundle_info(src) or {}
            if info is None:
                info = old or None
            else:
                kept = [k for k in WEIGHTS_INFO_KEYS if k in old and k not in info]
                info = {**info, **{k: old[k] for k in kept}}
                if kept:
                    print(f"instcolor: kept {', '.join(kept)} from {src}'s info (they describe the weights; set "
                          f"them in --info to change them)", file=sys.stderr)
        info = _with_class_rebalance(src, info)
    except CheckpointError as e:
        raise UsageError(str(e)) from None
    try:  # new, empty, or (with --force) an earlier bundle; never the input or the starter weights
        claim_output_dir(out, "bundle", inputs=(src,), force=getattr(args, "force", False), legacy_own=is_bundle)
    except OutputFolderError as e:
        raise UsageError(str(e)) from None
    try:
        save_bundle(out, nets, info=info)
    except (FileExistsError, ValueError, OSError) as e:
        raise UsageError(f"cannot write the bundle: {e}") from None
    write_output_marker(out, "bundle", BUNDLE_FILES)
    size = (out / MODEL_FILE).stat().st_size
    shared = len(json.loads((out / CONFIG_FILE).read_text())["shared"])
    before = 0 if src_is_bundle else sum((src / f).stat().st_size for f in OFFICIAL_FILES.values())
    ratio = f", {before / 2**20:.1f} MiB before" if before else ""
    print(f"instcolor: wrote a width-{nets['full'].width:g} bundle to {out}: {MODEL_FILE} {size / 2**20:.1f} MiB"
          f"{ratio}, {shared} tensors shared between nets", file=sys.stderr)
    return 0
