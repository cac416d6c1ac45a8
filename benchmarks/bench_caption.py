"""Captioning client throughput against the local server with a fixed artificial latency.

The server runs in its own process (``python -m omnivmed.rejection_sampling.server --latency L``)
and answers every request after L seconds. With C requests in flight the ideal
rate is C / L; we report the achieved requests/s over that ideal, for the bare
endpoint client and for the whole request path (client + durable cache write),
and the client's CPU time per request (this process only). Requests are real
caption requests: 4 JPEG frames of a generated clip as base64 parts plus the QA text.

    python benchmarks/bench_caption.py                      # C = 1, 16, 64 at L = 1 s
    python benchmarks/bench_caption.py --concurrency 64 --latency 0.5 --rounds 20

Goal: at least 0.9 of ideal at C = 64.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from omnivmed.rejection_sampling.cache import ReplyCache
from omnivmed.rejection_sampling.client import EndpointClient
from omnivmed.rejection_sampling.clip_inputs import read_clips
from omnivmed.rejection_sampling.config import EndpointConfig
from omnivmed.caption_demo import prepare_demo_windows
from omnivmed.rejection_sampling.media_parts import clip_media
from omnivmed.rejection_sampling.pipeline import CaptionPipeline
from omnivmed.rejection_sampling.config import CaptionConfig
from omnivmed.rejection_sampling.requester import Requester


def start_server(latency: float) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "omnivmed.rejection_sampling.server", "--latency", str(latency)],
        stdout=subprocess.PIPE,
        text=True,
    )
    return process, process.stdout.readline().strip()


def make_requests(base_url: str, n: int, workdir: Path):
    clip = read_clips(prepare_demo_windows(workdir))[0][0]
    config = CaptionConfig(generator=EndpointConfig(name="gen", base_url=base_url, model="bench", api_key_env=None))
    pipeline = CaptionPipeline(config, requester=None)
    media = clip_media(clip, "images", 4)
    template = pipeline.caption_request(clip, 0, 0, media)
    return [replace(template, candidate=i, seed=i) for i in range(n)]


async def run_client(requests, endpoint: EndpointConfig, cache: ReplyCache | None) -> tuple[float, float]:
    """(wall seconds, client CPU seconds) for all requests."""
    client = EndpointClient(endpoint)
    requester = Requester(cache, {endpoint.name: client}, run=1) if cache is not None else None
    send = requester.reply if requester else client.send
    await send(requests[0])  # open the connection pool outside the timing
    cpu, start = time.process_time(), time.perf_counter()
    await asyncio.gather(*(send(r) for r in requests[1:]))
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    await client.aclose()
    if requester is not None:
        requester.close()
    return wall, cpu


def measure(base_url: str, concurrency: int, latency: float, rounds: int, workdir: Path) -> dict:
    endpoint = EndpointConfig(name="gen", base_url=base_url, model="bench", api_key_env=None, concurrency=concurrency, timeout_s=60)
    n = concurrency * rounds + 1
    results = {}
    for label, with_cache in (("client", False), ("client+cache", True)):
        requests = make_requests(base_url, n, workdir)
        if with_cache:
            db = workdir / f"bench-{concurrency}.sqlite"
            for suffix in ("", "-wal", "-shm"):
                Path(f"{db}{suffix}").unlink(missing_ok=True)
            with ReplyCache(db) as cache:
                wall, cpu = asyncio.run(run_client(requests, endpoint, cache))
        else:
            wall, cpu = asyncio.run(run_client(requests, endpoint, None))
        rps = (n - 1) / wall
        ideal = concurrency / latency
        results[label] = {"rps": rps, "ideal": ideal, "ratio": rps / ideal, "cpu_ms_per_request": 1000 * cpu / (n - 1)}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency", type=float, default=1.0, help="server latency L in seconds (a 72B endpoint answers in seconds)")
    parser.add_argument("--concurrency", type=int, nargs="*", default=[1, 16, 64], help="values of C")
    parser.add_argument("--rounds", type=int, default=10, help="requests per run = C x rounds")
    args = parser.parse_args()
    server, base_url = start_server(args.latency)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            print(f"local server at {base_url}, latency L = {args.latency} s")
            for c in args.concurrency:
                for label, r in measure(base_url, c, args.latency, args.rounds, Path(tmp)).items():
                    print(
                        f"C = {c:3d}  {label:13s} {r['rps']:7.1f} req/s  ideal {r['ideal']:7.1f}  "
                        f"ratio {r['ratio']:.3f}  client CPU {r['cpu_ms_per_request']:.2f} ms/request"
                    )
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
