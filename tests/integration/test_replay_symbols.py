"""`quantcore replay --symbols N` serves N symbols made of the two recordings, and the 24 h
ticker's ranking changes when a test sets quote volumes (a real replay on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from quantcore.devservices.programs import ReplayProcess
from quantcore.localmode.source import default_recordings_dir
from quantcore.operator.api import Universe
from quantcore.operator.universe import parse_tickers, rank

pytestmark = pytest.mark.integration


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


async def depths(ws_url: str, rest_url: str, symbols: list[str]) -> list[Any]:
    """Depth snapshots as a shard gets them: subscribed to the diffs first (the replay's
    timeline starts with its first websocket client), then the REST request."""
    import aiohttp

    streams = "/".join(f"{s.lower()}@depth@100ms" for s in symbols)
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"{ws_url}?streams={streams}") as ws,
    ):
        await ws.receive(timeout=30)  # the timeline runs
        out = []
        for symbol in symbols:
            url = f"{rest_url}/api/v3/depth?symbol={symbol}&limit=5"
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=30)) as response:
                out.append(await response.json())
        return out


def test_copies_are_served_as_symbols_of_their_own_and_rankings_change(tmp_path: Path) -> None:
    recordings = sorted(default_recordings_dir().glob("*.gz"))
    with ReplayProcess(recordings, tmp_path, symbols=5) as replay:
        info = get(f"{replay.rest_url}/api/v3/exchangeInfo")
        names = [s["symbol"] for s in info["symbols"]]
        assert names == sorted(["BTCUSDT", "ETHUSDT", "BTC1USDT", "ETH1USDT", "BTC2USDT"])
        # A copy's book is the original's market: the recording's own snapshot, renamed.
        copy, original = asyncio.run(
            depths(replay.ws_url, replay.rest_url, ["BTC2USDT", "BTCUSDT"])
        )
        assert copy["bids"]
        assert copy["lastUpdateId"] == original["lastUpdateId"]

        def ranked() -> list[str]:
            with urllib.request.urlopen(f"{replay.rest_url}/api/v3/ticker/24hr") as response:
                tickers = parse_tickers(response.read().decode())
            return rank(tickers, Universe.model_validate({"quoteAsset": "USDT", "top": 2}))

        before = ranked()
        assert set(before) == set(names)
        assert before.index("BTCUSDT") < before.index("ETHUSDT")  # BTC trades more dollars
        replay.set_quote_volumes({"ETH1USDT": 1e12, "BTCUSDT": 1.0})
        after = ranked()
        assert after[0] == "ETH1USDT"
        assert after[-1] == "BTCUSDT"
        one = get(f"{replay.rest_url}/api/v3/ticker/24hr?symbol=ETH1USDT")
        assert float(one["quoteVolume"]) == 1e12
        # A bad request is refused with a reason and changes nothing.
        bad = urllib.request.Request(
            f"{replay.rest_url}/_replay/ticker", method="POST", data=b'{"XRPUSDT": 5}'
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(bad, timeout=10)
        assert refused.value.code == 400
        assert "XRPUSDT" in refused.value.read().decode()
        assert ranked() == after
        # DELETE: back to the recorded volumes.
        reset = urllib.request.Request(f"{replay.rest_url}/_replay/ticker", method="DELETE")
        urllib.request.urlopen(reset, timeout=10).read()
        assert ranked() == before


def test_replay_refuses_a_bad_symbol_count(tmp_path: Path) -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "quantcore.cli", "replay", "--symbols", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"QUANTCORE_RECORDINGS": str(default_recordings_dir()), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 2
    assert "--symbols: the number of symbols must be at least 1" in done.stderr
