"""HTTP protocols of the server: ``v1`` (POST /v1/colorize) and ``v2`` (Open Inference Protocol);
``types`` holds the v2 tensor codec (no web framework needed)."""
