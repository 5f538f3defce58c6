"""quantcore.feed.archive.bridged: an archived recording that starts at a snapshot keeps the
diffs its shard buffered before the snapshot arrived, but only those the snapshot does not
cover, and no line of the shard's own."""

from __future__ import annotations

import orjson

from quantcore.feed.archive import OWN_MARKER, bridged


def _diff(first: int, final: int) -> bytes:
    data = {"e": "depthUpdate", "E": 1, "s": "BTCUSDT", "U": first, "u": final, "b": [], "a": []}
    return orjson.dumps({"stream": "btcusdt@depth@100ms", "data": data})


SNAPSHOT = orjson.dumps({"lastUpdateId": 10, "bids": [], "asks": []})
TRADE = b'{"stream":"btcusdt@trade","data":{"e":"trade"}}'
MARKER = OWN_MARKER + b'"reset","symbol":"BTCUSDT","reason":"gap"}'


def test_only_the_diffs_past_the_snapshot_lead_it() -> None:
    lines = [
        (1, _diff(1, 5)),  # covered by the snapshot
        (2, TRADE),  # before the snapshot: not needed for the book
        (3, _diff(6, 10)),  # covered (its last id is the snapshot's)
        (4, _diff(11, 12)),  # buffered, past the snapshot: the book needs it
        (5, MARKER),
        (6, SNAPSHOT),
        (7, TRADE),
        (8, MARKER),
        (9, _diff(13, 14)),
    ]
    assert bridged(lines, 6) == [(4, _diff(11, 12)), (6, SNAPSHOT), (7, TRADE), (9, _diff(13, 14))]


def test_without_the_snapshot_every_exchange_line_is_kept() -> None:
    lines = [(1, _diff(1, 5)), (2, MARKER), (3, TRADE)]
    assert bridged(lines, 99) == [(1, _diff(1, 5)), (3, TRADE)]
