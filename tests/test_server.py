"""`kepkreator serve` under load, over real HTTP: a cost budget per request, bounded work in
flight and in the queue, turns at the models so a short request is not held behind long ones,
and work dropped for clients that hang up."""
import concurrent.futures
import time

import httpx
import pytest

from kepkreator.server import request_cost
from tests.conftest import serving

HEAVY = "abcdefghijklmno"  # 15 letters x best_of 64 and the PNG: 961 of the default 1,024


def heavy(url, timeout=300):
    return httpx.get(f"{url}/generate/{HEAVY}", params={"best_of": 64, "seed": 1}, timeout=timeout)


def wait_for(url, condition, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        health = httpx.get(url + "/health", timeout=10).json()
        if condition(health):
            return health
        time.sleep(0.05)
    pytest.fail(f"server never reached the state: {health}")


@pytest.fixture(scope="module")
def server():
    with serving() as url:
        yield url


def test_head_answers(server):
    for path in ("/", "/health"):
        response = httpx.head(server + path, timeout=30)
        assert response.status_code == 200 and response.content == b""


def test_a_request_over_the_cost_budget_is_a_422_naming_the_limit(server):
    """64 letters at best_of 64 and scale 8 held the models for seconds."""
    response = httpx.get(server + "/generate/" + "a" * 64, params={"best_of": 64, "scale": 8},
                         timeout=30)
    assert response.status_code == 422
    assert response.json()["detail"].startswith(
        f"this request costs {request_cost('a' * 64, 64, 8):,} units")
    assert "the limit is 1,024" in response.json()["detail"]
    assert request_cost(HEAVY, 64, 2) <= 1024  # the heaviest request the tests send is allowed


def test_a_short_request_is_not_held_behind_four_heavy_ones(server):
    """Turns at the models in arrival order, call by call: the short request finishes while
    every heavy request that came before it is still rendering."""
    finished = {}

    def timed(name, call):
        call()
        finished[name] = time.monotonic()

    with concurrent.futures.ThreadPoolExecutor(5) as pool:
        heavies = [pool.submit(timed, f"heavy{i}", lambda: heavy(server)) for i in range(4)]
        wait_for(server, lambda h: h["pending"] == 4)
        short = httpx.get(server + "/generate/7", params={"best_of": 1, "seed": 2}, timeout=300)
        finished["short"] = time.monotonic()
        for future in heavies:
            future.result()
    assert short.status_code == 200
    assert all(finished["short"] < finished[f"heavy{i}"] for i in range(4)), finished


def test_beyond_the_queue_a_503_with_retry_after_and_a_client_that_leaves_is_dropped():
    with serving("--max-in-flight", 1, "--max-queued", 1, "--max-cost", 10_000) as url:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            first = pool.submit(heavy, url)
            wait_for(url, lambda h: h["pending"] == 1)
            second = pool.submit(heavy, url)
            wait_for(url, lambda h: h["pending"] == 2)
            third = httpx.get(url + "/generate/7", timeout=30)
            assert third.status_code == 503 and third.headers["retry-after"] == "2"
            assert "busy: 2 requests are rendering or waiting" in third.json()["detail"]
            assert first.result().status_code == 200 and second.result().status_code == 200
        # A client that hangs up: its render (4,096 candidates, seconds of work) stops at the
        # next model call, not at its end.
        with pytest.raises(httpx.ReadTimeout):
            httpx.get(f"{url}/generate/{'a' * 64}", params={"best_of": 64}, timeout=0.5)
        health = wait_for(url, lambda h: h["pending"] == 0)
        assert health["cancelled"] == 1 and health["completed"] == 2
