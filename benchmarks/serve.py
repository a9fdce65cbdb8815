"""(g) serve: how long a light request takes alone, and while the heaviest allowed requests run.

A real `kepkreator serve` process on a free port; four clients each send the heaviest request
the default budget allows (15 letters at best_of 64: 960 candidates, and the PNG) again and again, and a
fifth times a light one (one digit, best_of 8) meanwhile. Reported: p50 and p95 of the light
request alone and under that load, and their ratio.
"""
from __future__ import annotations

import subprocess
import sys
import threading
import time

import numpy as np

HEAVY = ("/generate/abcdefghijklmno", {"best_of": 64})  # 961 of the budget of 1,024
LIGHT = ("/generate/7", {"best_of": 8})


def _percentiles(seconds: list[float]) -> dict:
    return {"p50_s": float(np.percentile(seconds, 50)), "p95_s": float(np.percentile(seconds, 95)),
            "n": len(seconds)}


def _time_light(url: str, n: int) -> list[float]:
    import httpx
    out = []
    for i in range(n):
        started = time.perf_counter()
        response = httpx.get(url + LIGHT[0], params={**LIGHT[1], "seed": i}, timeout=300)
        response.raise_for_status()
        out.append(time.perf_counter() - started)
    return out


def serve_fairness(root, light_requests: int = 30) -> dict:
    import httpx
    from tests.conftest import free_port
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "kepkreator.cli", "serve", "--port", str(port)],
                            cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(240):
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)
        _time_light(url, 3)  # warm-up
        alone = _time_light(url, light_requests)
        started = time.perf_counter()
        httpx.get(url + HEAVY[0], params=HEAVY[1], timeout=300).raise_for_status()
        heavy_alone = time.perf_counter() - started
        stop, heavy_done = threading.Event(), []

        def hammer(seed):
            while not stop.is_set():
                httpx.get(url + HEAVY[0], params={**HEAVY[1], "seed": seed}, timeout=300)
                heavy_done.append(1)

        threads = [threading.Thread(target=hammer, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        while httpx.get(url + "/health", timeout=10).json()["pending"] < 4:
            time.sleep(0.05)
        loaded = _time_light(url, light_requests)
        stop.set()
        for thread in threads:
            thread.join()
    finally:
        proc.terminate()
        proc.wait(30)
    alone, loaded = _percentiles(alone), _percentiles(loaded)
    return {"light_alone": alone, "light_under_4_heavy": loaded,
            "heavy_alone_s": heavy_alone, "heavy_completed_meanwhile": len(heavy_done),
            "p50_ratio": loaded["p50_s"] / alone["p50_s"],
            "p95_ratio": loaded["p95_s"] / alone["p95_s"]}


if __name__ == "__main__":
    import json
    from pathlib import Path
    print(json.dumps(serve_fairness(Path(__file__).resolve().parent.parent), indent=2))
