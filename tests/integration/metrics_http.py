"""Reading client-proxy's HTTP endpoints (`metrics_listen`) from a test: /healthz and /metrics."""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families
from proxy_env import PROMPT

__all__ = ["Samples", "dropped", "get", "health", "scrape", "value", "wait_health"]

#: Every sample of one scrape, by name and labels.
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _get(url: str, accept: str | None = None) -> tuple[int, str, str]:
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read().decode()


async def get(port: int, path: str, accept: str | None = None) -> tuple[int, str, str]:
    """Status, content type and body of GET http://127.0.0.1:port/path."""
    return await asyncio.to_thread(_get, f"http://127.0.0.1:{port}{path}", accept)


async def health(port: int) -> tuple[int, str]:
    status, _, body = await get(port, "/healthz")
    return status, body.strip()


async def wait_health(port: int, want: tuple[int, str], timeout: float = PROMPT) -> None:
    seen: list[tuple[int, str]] = []

    async def check() -> bool:
        seen.append(await health(port))
        return seen[-1] == want

    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"/healthz never said {want}; last {seen[-1]}")
        await asyncio.sleep(0.1)


async def scrape(port: int) -> Samples:
    """Every sample of /metrics, by name and labels."""
    status, _, body = await get(port, "/metrics")
    assert status == 200, body
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def dropped(samples: Samples) -> float:
    return sum(v for (n, _), v in samples.items() if n == "client_proxy_dropped_total")
