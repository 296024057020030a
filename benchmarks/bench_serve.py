"""Load test of `instcolor serve`: throughput, latency percentiles, errors and memory of the server
process on loopback, at several batching settings, against the in-process colorize_batch rate.

    python benchmarks/bench_serve.py [--photos ../shared/data/val] [--configs 1:0,8:2,8:10,8:50]
        [--concurrency 16] [--duration 10] [--rss-requests 2000] [--json out.json]

For each config MAX_BATCH:MAX_WAIT_MS a fresh server process is started (`python -m instcolor serve
--port 0 ...`), warmed up, then driven over the photos (raw JPEG bodies; responses are not decoded):

- lone: requests one at a time (the latency of a request that never waits for others);
- saturated: C concurrent clients, closed loop, for T seconds -> throughput, p50/p95/p99;
- half rate: an open loop at half the saturated throughput for T seconds -> p50/p95/p99;
- overload: 2 x max-queue + C clients for T/2 seconds -> the status counts (only 200 and 503 wanted);
- rss: N more requests after the rest (--rss-requests) -> the server's RSS before and after.

The reference is `Colorizer.colorize_batch` on the same photos, already decoded, in this process, at
batch 1 and at the largest configured batch, measured in the same run just before each server
(the server is stopped then; the columns "x in-process" divide by that measurement). Every phase is bounded by
its time and by --max-requests. Figures from a busy machine say little: quote quiet-machine runs.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def pct(values, q):
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, max(0, int(round(q / 100.0 * (len(v) - 1)))))]


class Server:
    def __init__(self, args, max_batch: int, max_wait_ms: float):
        cmd = [sys.executable, "-m", "instcolor", "serve", "--port", "0", "--max-batch", str(max_batch),
               "--max-wait-ms", str(max_wait_ms), "--max-queue", str(args.max_queue), "--backend", args.backend,
               "--timeout-s", str(args.timeout_s), "--log-level", "info", "--io-threads", str(args.io_threads)]
        if args.weights:
            cmd += ["--weights", args.weights]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.port = None
        self.lines = collections.deque(maxlen=50)  # one log line per request: keep the last ones
        seen = threading.Event()

        def read():
            for line in self.proc.stderr:
                self.lines.append(line)
                m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
                if m:
                    self.port = int(m.group(1))
                    seen.set()
            seen.set()

        threading.Thread(target=read, daemon=True).start()
        if not seen.wait(180) or self.port is None:
            raise SystemExit("server did not start:\n" + "".join(self.lines))
        self.url = f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout=300):
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit("server exited:\n" + "".join(self.lines))
            try:
                if httpx.get(self.url + "/v2/health/ready", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise SystemExit("server never became ready")

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)


class RawHTTP:
    """One keep-alive HTTP/1.1 connection over asyncio streams, for the load generator.

    The load generator shares the two cores with the server, so its own CPU cost is taken from the
    server: httpx costs about a millisecond of CPU per request here, this client a tenth of that.
    ``post`` -> the status code (the body is read and dropped); a broken connection raises
    ``ConnectionError`` and is reopened on the next call."""

    def __init__(self, url: str, target: str):
        host, port = url.removeprefix("http://").split(":")
        self.host, self.port, self.target = host, int(port), target
        self.reader = self.writer = None

    async def post(self, body: bytes, content_type: str = "image/jpeg") -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        try:
            self.writer.write(f"POST {self.target} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                              f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
            await self.writer.drain()
            head = await self.reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            fields = dict(line.split(b":", 1) for line in head.split(b"\r\n")[1:] if b":" in line)
            fields = {k.strip().lower(): v.strip().lower() for k, v in fields.items()}
            if b"content-length" in fields:
                await self.reader.readexactly(int(fields[b"content-length"]))
            elif fields.get(b"transfer-encoding") == b"chunked":
                while True:
                    n = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                    await self.reader.readexactly(n + 2)
                    if n == 0:
                        break
            else:
                raise ConnectionError("response without Content-Length or chunked body")
            if fields.get(b"connection") == b"close":
                self.close()
            return status
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, OSError) as e:
            self.close()
            raise ConnectionError(f"{type(e).__name__}: {e}") from None

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def _target(params) -> str:
    from urllib.parse import urlencode

    return "/v1/colorize" + ("?" + urlencode(params) if params else "")


class LoadClient:
    """``post(body)`` -> the status code, or the name of the transport error; a pool of keep-alive
    connections (raw: :class:`RawHTTP`, or one httpx.AsyncClient), opened as needed."""

    def __init__(self, url: str, params, kind: str = "raw", max_connections: int = 256):
        self.url, self.params, self.kind, self.max_connections = url, params, kind, max_connections
        self.target = _target(params)
        self._idle: list[RawHTTP] = []
        self._httpx = None

    async def __aenter__(self):
        if self.kind == "httpx":
            import httpx

            n = self.max_connections
            self._httpx = httpx.AsyncClient(base_url=self.url, timeout=120, limits=httpx.Limits(
                max_connections=n, max_keepalive_connections=n))
        return self

    async def __aexit__(self, *exc):
        if self._httpx is not None:
            await self._httpx.aclose()
        for conn in self._idle:
            conn.close()

    async def post(self, body: bytes):
        if self._httpx is not None:
            import httpx

            try:
                r = await self._httpx.post("/v1/colorize", content=body, params=self.params,
                                           headers={"content-type": "image/jpeg"})
                return r.status_code
            except httpx.TransportError as e:
                return type(e).__name__
        conn = self._idle.pop() if self._idle else RawHTTP(self.url, self.target)
        try:
            code = await conn.post(body)
        except ConnectionError:
            return "ConnectionError"
        self._idle.append(conn)
        return code


async def closed_loop(url, bodies, params, clients, duration, max_requests, client_kind="raw"):
    """C clients each sending the next photo as soon as the previous answer came -> (latencies of 200s,
    status counts, elapsed seconds)."""
    lat, status = [], Counter()
    sent = 0
    end = time.perf_counter() + duration
    async with LoadClient(url, params, client_kind, clients + 4) as lc:
        async def client(k):
            nonlocal sent
            i = k
            while time.perf_counter() < end and sent < max_requests:
                sent += 1
                body = bodies[i % len(bodies)]
                i += clients
                t0 = time.perf_counter()
                code = await lc.post(body)
                status[code] += 1
                if code == 200:
                    lat.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        await asyncio.gather(*[client(k) for k in range(clients)])
        return lat, status, time.perf_counter() - t0


async def open_loop(url, bodies, params, rate, duration, max_requests, client_kind="raw"):
    """Requests started at a fixed rate (independent of answers) -> (latencies of 200s, statuses)."""
    lat, status = [], Counter()
    n = min(max_requests, max(1, int(rate * duration)))
    async with LoadClient(url, params, client_kind) as lc:
        async def one(i):
            t0 = time.perf_counter()
            code = await lc.post(bodies[i % len(bodies)])
            status[code] += 1
            if code == 200:
                lat.append(time.perf_counter() - t0)
        tasks, start = [], time.perf_counter()
        for i in range(n):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(one(i)))
        await asyncio.gather(*tasks)
    return lat, status


def reference_rate(c, images, batch, duration, max_requests):
    c.colorize_batch(images[:batch])
    n, t0 = 0, time.perf_counter()
    i = 0
    while time.perf_counter() - t0 < duration and n < max_requests:
        chunk = [images[(i + k) % len(images)] for k in range(batch)]
        i += batch
        c.colorize_batch(chunk)
        n += batch
    return n / (time.perf_counter() - t0)


def fmt_ms(s):
    return f"{s * 1000:.0f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", default=str(HERE.parent.parent / "shared" / "data" / "val"), help="folder of photos")
    ap.add_argument("--limit", type=int, default=64, help="use the first N photos (default 64)")
    ap.add_argument("--configs", default="1:0,8:2,8:10,8:50", help="MAX_BATCH:MAX_WAIT_MS,... (default 1:0,8:2,8:10,8:50)")
    ap.add_argument("--concurrency", type=int, default=16, help="closed-loop clients (default 16)")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per phase (default 10)")
    ap.add_argument("--max-requests", type=int, default=5000, help="at most this many requests per phase")
    ap.add_argument("--max-queue", type=int, default=64, help="the server's --max-queue (default 64)")
    ap.add_argument("--timeout-s", type=float, default=60.0, help="the server's --timeout-s (default 60)")
    ap.add_argument("--io-threads", type=int, default=2, help="the server's --io-threads (default 2)")
    ap.add_argument("--rss-requests", type=int, default=0, help="also N requests for the RSS growth (0: skip)")
    ap.add_argument("--weights", default=None, help="weights folder (default: the built-in starter weights)")
    ap.add_argument("--backend", default="auto", help="--backend of server and reference (default auto)")
    ap.add_argument("--format", default="jpeg", help="response format asked for (default jpeg; png costs more)")
    ap.add_argument("--client", choices=("raw", "httpx"), default="raw",
                    help="load generator: raw keep-alive HTTP/1.1 on asyncio streams (default; about 0.1 ms of CPU "
                         "per request) or httpx (about 1 ms, taken from the server on a small machine)")
    ap.add_argument("--json", default=None, help="also write the results as JSON to this file")
    args = ap.parse_args()

    from instcolor.imageio import read_image

    files = sorted(p for p in Path(args.photos).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:args.limit]
    if not files:
        raise SystemExit(f"no photos in {args.photos}")
    bodies = [p.read_bytes() for p in files]
    images = [read_image(b).rgb for b in bodies]
    configs = [tuple(float(x) if "." in x else int(x) for x in c.split(":")) for c in args.configs.split(",")]
    params = {"format": args.format}
    print(f"{len(files)} photos from {args.photos}; {os.cpu_count()} CPUs; concurrency {args.concurrency}; "
          f"{args.duration:g} s per phase; response format {args.format}", flush=True)

    big = max(int(b) for b, _ in configs)
    colorizer = None

    def reference():
        """In-process colorize_batch rate at batch 1 and at the largest batch, measured now."""
        nonlocal colorizer
        if colorizer is None:
            from instcolor import Colorizer

            colorizer = Colorizer.from_pretrained(args.weights or None, backend=args.backend)
        out = {b: reference_rate(colorizer, images, b, args.duration / 2, args.max_requests) for b in sorted({1, big})}
        print("in-process colorize_batch (decoded photos, no HTTP): " +
              ", ".join(f"batch {b}: {r:.2f} img/s" for b, r in out.items()), flush=True)
        return out

    results = []
    for max_batch, max_wait in configs:
        ref = reference()  # just before each server: a busy machine drifts
        srv = Server(args, int(max_batch), max_wait)
        row = {"max_batch": int(max_batch), "max_wait_ms": max_wait, "reference_img_per_s": ref}
        try:
            srv.wait_ready()
            asyncio.run(closed_loop(srv.url, bodies, params, max(2, int(max_batch)), 2.0, 4 * int(max_batch),
                                    client_kind=args.client))
            row["rss_start_mib"] = rss_mib(srv.proc.pid)
            lone, st, _ = asyncio.run(closed_loop(srv.url, bodies, params, 1, args.duration / 2, 30, client_kind=args.client))
            row["lone_p50_ms"] = pct(lone, 50) * 1000
            lat, st, el = asyncio.run(closed_loop(srv.url, bodies, params, args.concurrency, args.duration,
                                                  args.max_requests, client_kind=args.client))
            row["throughput"] = len(lat) / el
            row.update({f"sat_p{q}_ms": pct(lat, q) * 1000 for q in (50, 95, 99)})
            row["sat_status"] = dict(st)
            half = max(0.5, row["throughput"] / 2)
            lat, st = asyncio.run(open_loop(srv.url, bodies, params, half, args.duration, args.max_requests,
                                             client_kind=args.client))
            row["half_rate"] = half
            row.update({f"half_p{q}_ms": pct(lat, q) * 1000 for q in (50, 95, 99)})
            row["half_status"] = dict(st)
            over = 2 * args.max_queue + args.concurrency
            _, st, _ = asyncio.run(closed_loop(srv.url, bodies, params, over, args.duration / 2, args.max_requests,
                                                client_kind=args.client))
            row["overload_clients"] = over
            row["overload_status"] = {str(k): v for k, v in st.items()}
            if args.rss_requests:
                before = rss_mib(srv.proc.pid)
                _, st, el = asyncio.run(closed_loop(srv.url, bodies, params, args.concurrency, 3600,
                                                    args.rss_requests, client_kind=args.client))
                row["rss_phase"] = {"requests": sum(st.values()), "before_mib": before,
                                    "after_mib": rss_mib(srv.proc.pid), "status": dict(st)}
            row["rss_end_mib"] = rss_mib(srv.proc.pid)
        finally:
            row["exit_status"] = srv.stop()
        results.append(row)
        print(json.dumps(row), flush=True)

    print()
    print("| max batch | max wait ms | req/s | x in-process b1 | x in-process b%d | p50 / p95 / p99 ms (saturated) "
          "| lone p50 ms | half-rate p99 ms (x lone) | overload statuses | RSS start -> end MiB |" % big)
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        ref = r["reference_img_per_s"]
        print(f"| {r['max_batch']} | {r['max_wait_ms']} | {r['throughput']:.2f} | {r['throughput'] / ref[1]:.2f} | "
              f"{r['throughput'] / ref[big]:.2f} | {r['sat_p50_ms']:.0f} / {r['sat_p95_ms']:.0f} / {r['sat_p99_ms']:.0f} | "
              f"{r['lone_p50_ms']:.0f} | {r['half_p99_ms']:.0f} ({r['half_p99_ms'] / r['lone_p50_ms']:.1f}x) | "
              f"{r['overload_status']} | {r['rss_start_mib']:.0f} -> {r['rss_end_mib']:.0f} |")
    for r in results:
        if "rss_phase" in r:
            p = r["rss_phase"]
            print(f"RSS over {p['requests']} requests (batch {r['max_batch']}): {p['before_mib']:.0f} -> "
                  f"{p['after_mib']:.0f} MiB ({(p['after_mib'] / p['before_mib'] - 1) * 100:+.1f} %)")
    errors = {k: v for r in results for k, v in r["sat_status"].items() if k != 200}
    print(f"errors in the saturated phases: {errors or 'none'}")
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": results}, indent=2, default=str))


if __name__ == "__main__":
    main()
