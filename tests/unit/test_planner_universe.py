"""The reconcile's symbol resolution for a universe selector: refresh when due, hysteresis
against the current table, and the ticker read over HTTP from a loopback server."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from quantcore.operator.api import MarketFeedStatus, UniverseStatus
from quantcore.operator.planner import sample_feed
from quantcore.operator.reconcile import resolve_symbols
from quantcore.routing import rebalance

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
VOLUMES = {"AAAUSDT": 900, "BBBUSDT": 800, "DDDUSDT": 700, "CCCUSDT": 650, "EEEBTC": 9999}


@pytest.fixture
def ticker_url() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps(
                [{"symbol": s, "quoteVolume": str(v), "lastPrice": "1"} for s, v in VOLUMES.items()]
            ).encode()
            self.send_response(200 if self.path == "/api/v3/ticker/24hr" else 404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def feed(url: str):
    return sample_feed(
        symbols=None,
        universe={"quoteAsset": "USDT", "top": 3, "hysteresis": 1, "refreshSeconds": 60},
        endpoints={"restUrl": url},
    )


def test_first_selection_is_the_top_n(ticker_url: str) -> None:
    symbols, refreshed = resolve_symbols(feed(ticker_url), None, None, NOW)
    assert symbols == ["AAAUSDT", "BBBUSDT", "DDDUSDT"]
    assert refreshed == "2026-01-01T12:00:00Z"


def test_incumbent_within_the_band_stays_and_refresh_waits_until_due(ticker_url: str) -> None:
    f = feed(ticker_url)
    current = rebalance(None, ["AAAUSDT", "BBBUSDT", "CCCUSDT"], 20, 4)  # CCC ranks 4th now
    previous = MarketFeedStatus(
        observed_generation=f.generation,
        universe=UniverseStatus(refreshed_at="2026-01-01T11:59:30Z", selected=3),
    )
    # Not due: the current table is kept without fetching.
    assert resolve_symbols(f, current, previous, NOW) == (
        list(current.symbols),
        "2026-01-01T11:59:30Z",
    )
    # Due: CCC is 4th, within top 3 + hysteresis 1, so it stays.
    later = NOW + timedelta(minutes=5)
    symbols, _ = resolve_symbols(f, current, previous, later)
    assert symbols == ["AAAUSDT", "BBBUSDT", "CCCUSDT"]


def test_unreachable_ticker_raises_an_os_error() -> None:
    with pytest.raises(OSError, match="refused"):
        resolve_symbols(feed("http://127.0.0.1:9"), None, None, NOW)
