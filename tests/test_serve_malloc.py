"""instcolor.serve.malloc: with keep_freed_blocks(), a server's repeated large allocations (the fusion
net's features, 2-8 MB each per edit) reuse mapped pages instead of faulting fresh ones in."""
import platform
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(sys.platform != "linux" or platform.libc_ver()[0] != "glibc",
                                reason="mallopt settings are glibc's (Linux)")

SCRIPT = textwrap.dedent("""
    import resource, sys
    import numpy as np
    if sys.argv[1] == "tuned":
        from instcolor.serve.malloc import keep_freed_blocks
        assert keep_freed_blocks() and keep_freed_blocks()  # once per process; the second call is a no-op
    def rounds(k):  # like one edit: several large arrays made, filled and dropped
        for _ in range(k):
            arrays = [np.ones(n, np.float32) for n in (2 << 20, 1 << 20, 512 << 10, 2 << 20, 1 << 20)]
            del arrays
    rounds(2)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    rounds(10)
    print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10)
""")


def faults_per_round(mode: str) -> float:
    r = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return float(r.stdout.strip())


def test_keep_freed_blocks_stops_page_faults_of_repeated_large_arrays():
    plain, tuned = faults_per_round("plain"), faults_per_round("tuned")
    # 26 MB per round: ~6,600 pages; plain glibc faults on most of them again (about 2,000 per
    # round measured), tuned it reuses the heap
    assert tuned < 50, tuned
    assert plain > 10 * max(tuned, 1.0), (plain, tuned)


def test_the_serve_command_applies_it_and_build_app_does_not(monkeypatch):
    """The setting is process-wide: the server process (``instcolor serve``, a Ray replica) applies
    it; an app built inside another program (this test process) leaves that program's malloc alone."""
    pytest.importorskip("fastapi", reason="instcolor serve needs the serve extra: pip install '.[serve]'")
    pytest.importorskip("uvicorn", reason="instcolor serve needs the serve extra: pip install '.[serve]'")
    from fastapi.testclient import TestClient

    from instcolor.errors import UsageError
    from instcolor.serve import ServeSettings, app as app_module, build_app, cli, malloc

    calls = []
    monkeypatch.setattr(malloc, "keep_freed_blocks", lambda: calls.append(1) or True)

    class Tiny:
        default_size = 64
        detector = None

        def colorize_batch(self, images, *a, **k):
            raise AssertionError("not called")

    with TestClient(build_app(ServeSettings(warmup=False), colorizer=Tiny())):
        pass
    assert calls == []

    def no_weights(settings):
        raise FileNotFoundError("weights: no such folder")

    monkeypatch.setattr(app_module, "default_loader", no_weights)  # stop before listening
    with pytest.raises(UsageError, match="no such folder"):
        cli._serve_uvicorn(ServeSettings(), "warning")
    assert calls == [1]
