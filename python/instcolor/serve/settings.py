"""Server settings: one frozen, validated object shared by the app, the batcher and the CLI."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields


@dataclass(frozen=True)
class ServeSettings:
    """What ``instcolor serve`` is started with (see ``instcolor serve --help``).

    Every field is checked at construction; a bad value raises ValueError naming the field."""

    weights: str | None = None          # weights folder; None = the built-in starter weights
    backend: str = "auto"               # Colorizer backend
    device: str = "cpu"
    detector: str | None = None         # an ONNX detector model; None = boxes only from the request
    score_threshold: float = 0.3        # detector score threshold
    host: str = "127.0.0.1"
    port: int = 8000
    max_batch: int = 8                  # requests per colorize_batch call
    max_wait_ms: float = 10.0           # how long a batch waits for more requests after its first
    max_queue: int = 64                 # requests waiting for the model; one more -> 503
    max_body_mb: float = 25.0           # request body limit (MiB) -> 413
    max_pixels: int | None = None       # image pixel limit (None: $INSTCOLOR_MAX_PIXELS, else 100 M) -> 413
    timeout_s: float = 30.0             # a request not answered within this -> 504
    io_threads: int = 2                 # thread pool for body parsing, image decoding and encoding
    model_name: str = "instcolor"
    model_version: str = "1"
    warmup: bool = True                 # run the model once before reporting ready
    decode: str | None = None           # ab decoding (None: what the weights recommend); see Colorizer
    temperature: float | None = None    # annealed-mean temperature of distribution / mixed decoding
    mix: float | None = None            # the annealed mean's share in mixed decoding

    def __post_init__(self):
        def bad(name, why):
            raise ValueError(f"{name}: {why}, got {getattr(self, name)!r}")

        def whole(name, lo, hi=None):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
                bad(name, f"expected a whole number {lo}.." + (str(hi) if hi is not None else ""))

        def positive(name, allow_zero=False):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0 or (
                    v == 0 and not allow_zero):
                bad(name, "expected a finite number " + (">= 0" if allow_zero else "> 0"))

        whole("port", 0, 65535)
        whole("max_batch", 1, 1024)
        whole("max_queue", 1)
        whole("io_threads", 1, 256)
        positive("max_wait_ms", allow_zero=True)
        positive("max_body_mb")
        positive("timeout_s")
        positive("score_threshold", allow_zero=True)
        if self.score_threshold > 1:
            bad("score_threshold", "expected a value in [0, 1]")
        if self.max_wait_ms / 1000.0 >= self.timeout_s:
            raise ValueError(f"max_wait_ms: {self.max_wait_ms} ms is not shorter than timeout_s "
                             f"({self.timeout_s} s); every batch would time out")
        if self.max_pixels is not None:
            from ..imageio import max_pixels_limit

            try:
                max_pixels_limit(self.max_pixels)
            except ValueError:
                bad("max_pixels", "expected a positive whole number of pixels")
        if self.backend not in ("auto", "torch", "onnxruntime", "tensorrt"):
            bad("backend", "expected auto, torch, onnxruntime or tensorrt")
        if self.decode is not None:
            from ..colorizer import check_decode

            try:
                check_decode(self.decode)
            except ValueError:
                bad("decode", "expected regression, distribution or mixed")
        from ..distribution import check_mix, check_temperature

        for name, check in (("temperature", check_temperature), ("mix", check_mix)):
            if getattr(self, name) is not None:
                try:
                    check(getattr(self, name))
                except ValueError as e:
                    raise ValueError(f"{name}: {e}") from None
        if not self.model_name or "/" in self.model_name:
            bad("model_name", "expected a name without '/'")

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)

    @property
    def max_wait_s(self) -> float:
        return self.max_wait_ms / 1000.0

    def pixel_limit(self) -> int:
        from ..imageio import max_pixels_limit

        return max_pixels_limit(self.max_pixels)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "ServeSettings":
        """Settings from a mapping (e.g. ``serve run`` arguments); unknown keys raise ValueError.
        String values are converted to the field's type."""
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        out = {}
        for k, v in values.items():
            default = known[k].default
            if isinstance(v, str) and default is not None and not isinstance(default, str):
                kind = type(default)
                try:
                    v = (v.strip().lower() in ("1", "true", "yes", "on")) if kind is bool else kind(v)
                except ValueError:
                    raise ValueError(f"{k}: expected a {kind.__name__}, got {v!r}") from None
            elif isinstance(v, str) and k == "max_pixels":
                try:
                    v = int(v)
                except ValueError:
                    raise ValueError(f"{k}: expected a whole number, got {v!r}") from None
            out[k] = v
        return cls(**out)
