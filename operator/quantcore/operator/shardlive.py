"""Which symbols each feed shard has live: GET /live on every pod of the feed's metrics Service.

The Service is headless and publishes not-ready addresses, so one DNS lookup names every
shard pod without any API permission; each answer says which shard it is. A shard that does
not answer is simply absent: the handover then waits for it, up to its timeout.
"""

from __future__ import annotations

import json
import logging
import socket
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

from quantcore.operator import planner
from quantcore.operator.api import MarketFeed

log = logging.getLogger(__name__)

TIMEOUT_S = 2.0  # per shard: a reconcile must not stall on one slow pod
MAX_SYMBOLS = 10_000  # a sane bound on one answer

Resolve = Callable[[str, int], list[str]]
Fetch = Callable[[str], bytes]


def service_host(feed: MarketFeed) -> str:
    return f"{planner.feed_service_name(feed.name)}.{feed.namespace}.svc"


def resolve_addresses(host: str, port: int) -> list[str]:
    """Every address `host` resolves to; none when it does not resolve (no shard yet)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        return []
    return sorted({str(info[4][0]) for info in infos})


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=TIMEOUT_S) as resp:
        body: bytes = resp.read(1 << 20)
        return body


def parse(body: bytes) -> tuple[int, frozenset[str]]:
    """A /live answer -> (shard, live symbols); ValueError when it is not one."""
    doc = json.loads(body)
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")
    shard, live = doc.get("shard"), doc.get("live")
    if not isinstance(shard, int) or isinstance(shard, bool) or shard < 0:
        raise ValueError(f"bad shard {shard!r}")
    if not isinstance(live, list) or len(live) > MAX_SYMBOLS:
        raise ValueError("bad live list")
    if not all(isinstance(s, str) for s in live):
        raise ValueError("live symbols must be strings")
    return shard, frozenset(live)


def _url(address: str, port: int) -> str:
    host = f"[{address}]" if ":" in address else address
    return f"http://{host}:{port}/live"


def collect(answers: Iterable[tuple[int, frozenset[str]]]) -> dict[int, frozenset[str]]:
    """Per shard, the union of its pods' answers (a shard restarting may briefly have two)."""
    out: dict[int, frozenset[str]] = {}
    for shard, live in answers:
        out[shard] = out.get(shard, frozenset()) | live
    return out


def ask(
    feed: MarketFeed,
    *,
    port: int = planner.METRICS_PORT,
    resolve: Resolve = resolve_addresses,
    get: Fetch = fetch,
) -> dict[int, frozenset[str]]:
    """shard -> symbols it reports live, for every shard pod that answered."""
    addresses = resolve(service_host(feed), port)
    if not addresses:
        return {}

    def one(address: str) -> tuple[int, frozenset[str]] | None:
        url = _url(address, port)
        try:
            return parse(get(url))
        except (OSError, urllib.error.URLError) as exc:
            log.info("%s: no answer: %s", url, exc, extra={"url": url})
        except ValueError as exc:
            log.warning("%s: not a /live answer: %s", url, exc, extra={"url": url})
        return None

    with ThreadPoolExecutor(min(8, len(addresses))) as pool:
        answers = [a for a in pool.map(one, addresses) if a is not None]
    return collect(answers)
