"""FrameSplitter: whatever way the socket cuts the stream, complete text frames come out as
payloads and every other byte reaches the full implementation, in order and unchanged."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st
from websockets.frames import Frame, Opcode

from quantcore.feed.wsframes import FrameSplitter

MAX = 1 << 20


def wire(opcode: Opcode, data: bytes, *, fin: bool = True) -> bytes:
    return Frame(opcode, data, fin=fin).serialize(mask=False, extensions=None)


def split(
    chunks: list[bytes], max_size: int = MAX
) -> tuple[list[tuple[str, bytes]], FrameSplitter]:
    out: list[tuple[str, bytes]] = []
    splitter = FrameSplitter(
        max_size, lambda b: out.append(("text", b)), lambda b: out.append(("other", b))
    )
    for chunk in chunks:
        splitter.feed(chunk)
    return out, splitter


def cut(stream: bytes, points: list[int]) -> list[bytes]:
    edges = sorted({0, len(stream), *(p % (len(stream) + 1) for p in points)})
    return [stream[a:b] for a, b in itertools.pairwise(edges)]


def merged(out: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """Adjacent `other` pieces joined: how the bytes were cut for websockets does not matter."""
    joined: list[tuple[str, bytes]] = []
    for kind, data in out:
        if kind == "other" and joined and joined[-1][0] == "other":
            joined[-1] = ("other", joined[-1][1] + data)
        else:
            joined.append((kind, data))
    return joined


# Every kind of frame, with each length encoding (7-bit, 16-bit, 64-bit).
MIXED = [
    ("text", b'{"stream":"a","data":{}}'),
    ("text", b"x" * 200),
    ("other", wire(Opcode.PING, b"are you there")),
    ("text", b"y" * 70_000),
    ("other", wire(Opcode.TEXT, b"first half ", fin=False)),
    ("other", wire(Opcode.PONG, b"")),  # control frames may come between fragments
    ("other", wire(Opcode.CONT, b"second half", fin=True)),
    ("other", wire(Opcode.BINARY, b"\x00\x01")),
    ("text", b""),
]


def mixed_stream() -> bytes:
    return b"".join(wire(Opcode.TEXT, d) if k == "text" else d for k, d in MIXED)


def expected_mixed() -> list[tuple[str, bytes]]:
    return merged(list(MIXED))


@given(st.lists(st.integers(min_value=0, max_value=80_000), max_size=40))
def test_any_cut_of_the_stream_splits_the_same(points: list[int]) -> None:
    out, splitter = split(cut(mixed_stream(), points))
    assert merged(out) == expected_mixed()
    assert not splitter.handed_over


def test_one_byte_at_a_time() -> None:
    stream = mixed_stream()
    out, _ = split([stream[i : i + 1] for i in range(len(stream))])
    assert merged(out) == expected_mixed()


def test_other_frames_reach_websockets_whole() -> None:
    ping = wire(Opcode.PING, b"p")
    stream = wire(Opcode.TEXT, b"a") + ping + wire(Opcode.TEXT, b"b")
    out, _ = split([stream[:4], stream[4:6], stream[6:]])
    assert out == [("text", b"a"), ("other", ping), ("text", b"b")]


def test_a_text_frame_inside_a_fragmented_message_is_left_to_websockets() -> None:
    # A protocol error websockets must see, not a message to hand on.
    start, stray = wire(Opcode.TEXT, b"start", fin=False), wire(Opcode.TEXT, b"stray")
    out, _ = split([start + stray])
    assert out == [("other", start), ("other", stray)]


@given(st.sampled_from(["masked", "reserved bit", "too big", "close"]), st.integers(0, 30))
def test_what_it_cannot_vouch_for_ends_the_fast_path(case: str, at: int) -> None:
    before = wire(Opcode.TEXT, b"before")
    if case == "masked":
        odd = Frame(Opcode.TEXT, b"masked").serialize(mask=True, extensions=None)
    elif case == "reserved bit":
        plain = wire(Opcode.TEXT, b"deflated?")
        odd = bytes([plain[0] | 0x40]) + plain[1:]  # RSV1: permessage-deflate, not negotiated
    elif case == "too big":
        odd = wire(Opcode.TEXT, b"z" * 300)
    else:
        odd = wire(Opcode.CLOSE, b"\x03\xe8")
    after = wire(Opcode.TEXT, b"after")
    stream = before + odd + after
    out, splitter = split(cut(stream, [at]), max_size=200)
    assert out[0] == ("text", b"before")
    assert merged(out[1:]) == [("other", odd + after)]
    assert splitter.handed_over
    splitter.feed(b"more")
    assert out[-1] == ("other", b"more")


def test_on_other_can_end_the_fast_path() -> None:
    """When the implementation behind it stops serving (a protocol error it failed on), the
    frames after that one are no longer handed on as text."""
    ping, after = wire(Opcode.PING, b"p"), wire(Opcode.TEXT, b"after")
    out: list[tuple[str, bytes]] = []

    def on_other(data: bytes) -> None:
        out.append(("other", data))
        splitter.stop()

    splitter = FrameSplitter(MAX, lambda b: out.append(("text", b)), on_other)
    splitter.feed(wire(Opcode.TEXT, b"before") + ping + after)
    assert out == [("text", b"before"), ("other", ping), ("other", after)]
    assert splitter.handed_over
