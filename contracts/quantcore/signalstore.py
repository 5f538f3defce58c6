"""Where signals live in Redis: the layout shared by the stream job's sink and the serving tier.

Per symbol, one hash `qc:signal:{SYMBOL}` holds, for each kind of update ("book", "trades"),
the last accepted exchange sequence (`<kind>_seq`) and the encoded `SignalUpdate` (`<kind>`).
Every accepted update is also PUBLISHed, as the same bytes, on `qc:updates:{SYMBOL}`; the
serving tier holds one pattern subscription to UPDATES_PATTERN. `qc:symbols` lists every
symbol ever written. Writes go through one Lua script (a monotonic compare-and-set), so a
replayed, duplicated or reordered update can never move a symbol's value backwards.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from redis.exceptions import NoScriptError

if TYPE_CHECKING:
    import redis

KINDS = ("book", "trades")
SYMBOLS_KEY = "qc:symbols"
UPDATES_PATTERN = "qc:updates:*"
# Input the stream job refused: a set of "topic/partition/offset", so a record replayed after
# a restart is counted once (SCARD is the count).
MALFORMED_KEY = "qc:stream:malformed"


# Set by the relay of each signals topic when it starts rebuilding this Redis's state (see
# quantcore.stream.rebuild): a Redis without it has lost (or never had) the state.
RELAY_MARKERS = "qc:stream:relay:*"


def relay_marker(topic: str) -> str:
    return RELAY_MARKERS.replace("*", topic)


def state_key(symbol: str) -> str:
    return f"qc:signal:{symbol}"


def channel(symbol: str) -> str:
    return f"qc:updates:{symbol}"


def seq_field(kind: str) -> str:
    return f"{kind}_seq"


# KEYS: state hash, symbols set. ARGV: kind, sequence (canonical decimal), payload, symbol,
# channel. Sequences are compared as decimal strings (longer is larger, then lexicographic)
# because Lua numbers are doubles and exchange ids need not stay below 2^53.
# Returns 1 when the update was newer and is now stored and published, else 0.
CAS_SCRIPT = """
local field = ARGV[1] .. '_seq'
local new = ARGV[2]
local old = redis.call('HGET', KEYS[1], field)
if old and (#new < #old or (#new == #old and new <= old)) then
  return 0
end
redis.call('HSET', KEYS[1], field, new, ARGV[1], ARGV[3])
redis.call('SADD', KEYS[2], ARGV[4])
redis.call('PUBLISH', ARGV[5], ARGV[3])
return 1
"""


@dataclass(frozen=True)
class Update:
    """One encoded update of one kind for one symbol, at an exchange sequence."""

    symbol: str
    kind: str
    sequence: int
    payload: bytes  # an encoded quantcore.v1.SignalUpdate

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown kind {self.kind!r}; expected one of {KINDS}")
        if self.sequence < 0:
            raise ValueError(f"{self.symbol}: negative sequence {self.sequence}")


class SignalWriter:
    """Writes updates with the compare-and-set script (EVALSHA; loaded again after a FLUSH)."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._cas = client.register_script(CAS_SCRIPT)

    def write(self, symbol: str, kind: str, sequence: int, payload: bytes) -> bool:
        """Store and publish `payload` if `sequence` is newer than the stored one."""
        update = Update(symbol, kind, sequence, payload)
        return bool(self._cas(keys=_keys(update), args=_args(update)))

    def write_many(self, updates: Sequence[Update]) -> list[bool]:
        """`write` each update, in order, in one round trip: still one script call (one atomic
        compare-and-set) per update, so each is accepted or refused on its own."""
        if not updates:
            return []
        results = self._evalsha_all(updates)
        missing = [i for i, result in enumerate(results) if isinstance(result, NoScriptError)]
        if missing:
            # Redis restarted or flushed its scripts: load ours again and redo what missed.
            self._cas.sha = self._client.script_load(CAS_SCRIPT)
            retried = self._evalsha_all([updates[i] for i in missing])
            for i, result in zip(missing, retried, strict=True):
                results[i] = result
        for result in results:
            if isinstance(result, Exception):
                raise result
        return [bool(accepted) for accepted in results]

    def _evalsha_all(self, updates: Sequence[Update]) -> list[Any]:
        # Plain EVALSHA, not redis-py's Script in a pipeline: that one asks SCRIPT EXISTS
        # first, a second round trip on every burst.
        pipe = self._client.pipeline(transaction=False)
        for update in updates:
            pipe.evalsha(self._cas.sha, 2, *_keys(update), *_args(update))
        return list(pipe.execute(raise_on_error=False))

    def holds_state_of(self, topic: str) -> bool:
        """Whether this Redis still holds what the relay of `topic` wrote: its marker is
        there (a restarted Redis without persistence has lost both)."""
        return bool(self._client.exists(relay_marker(topic)))

    def mark_state_of(self, topic: str, note: str) -> None:
        self._client.set(relay_marker(topic), note)

    def record_malformed(self, topic: str, partition: int, offset: int) -> None:
        self._client.sadd(MALFORMED_KEY, f"{topic}/{partition}/{offset}")


def _keys(update: Update) -> list[str]:
    return [state_key(update.symbol), SYMBOLS_KEY]


def _args(update: Update) -> list[str | bytes]:
    return [
        update.kind,
        str(update.sequence),
        update.payload,
        update.symbol,
        channel(update.symbol),
    ]


@dataclass(frozen=True)
class Stored:
    """The last accepted update of one kind for one symbol."""

    sequence: int
    payload: bytes  # an encoded quantcore.v1.SignalUpdate


def snapshot(fields: Mapping[bytes, bytes]) -> dict[str, Stored]:
    """Decode a state hash (HGETALL of state_key) into kind -> Stored; absent kinds are left out."""
    out: dict[str, Stored] = {}
    for kind in KINDS:
        seq = fields.get(seq_field(kind).encode())
        payload = fields.get(kind.encode())
        if seq is not None and payload is not None:
            out[kind] = Stored(int(seq), payload)
    return out


def read_snapshot(client: redis.Redis, symbol: str) -> dict[str, Stored]:
    """The stored updates of `symbol` (the client must not decode responses: payloads are bytes)."""
    fields: Mapping[bytes, bytes] = client.hgetall(state_key(symbol))  # type: ignore[assignment]
    return snapshot(fields)


def malformed_count(client: redis.Redis) -> int:
    return int(client.scard(MALFORMED_KEY))
