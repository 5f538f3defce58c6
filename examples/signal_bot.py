"""An example bot on the MarketData stream: paper-trades book imbalance confirmed by trade flow.

Rule (illustrative, not advice): go long one unit when the 5-level order book imbalance and
the 5 s trade-flow imbalance both exceed a threshold, short when both are below its
negative, flat otherwise; fills at the touch. It prints every position change and the
paper P&L. Run beside `quantcore up`:

    python examples/signal_bot.py --target 127.0.0.1:50051 \
        --ca .dev/up/tls/ca.crt --token-file .dev/up/tls/client.token BTCUSDT ETHUSDT

(`--ca`, `--cert`, `--key`, `--token`, `--token-file`: as `quantcore watch`, with the same
QUANTCORE_* environment variables as fallback; no `--ca` for a server run with `--insecure`.)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from dataclasses import dataclass, field

from quantcore.client import security
from quantcore.client.stream import MarketDataClient, Subscription
from quantcore.v1 import signals_pb2


@dataclass(frozen=True)
class Decision:
    symbol: str
    position: int  # -1, 0, +1
    price: float
    reason: str


@dataclass
class SymbolState:
    obi_5: float = 0.0
    tfi_5s: float = 0.0
    best_bid: float = 0.0
    best_ask: float = 0.0
    position: int = 0
    entry: float = 0.0
    realized: float = 0.0


@dataclass
class ImbalanceBot:
    """Pure decision logic: feed it updates, get decisions back. No I/O."""

    threshold: float = 0.3
    states: dict[str, SymbolState] = field(default_factory=dict)

    def on_update(self, update: signals_pb2.SignalUpdate) -> Decision | None:
        state = self.states.setdefault(update.symbol, SymbolState())
        kind = update.WhichOneof("body")
        if kind == "book":
            state.obi_5 = update.book.obi_5
            state.best_bid, state.best_ask = update.book.best_bid, update.book.best_ask
        elif kind == "trades":
            state.tfi_5s = update.trades.tfi_5s
        if state.best_bid <= 0 or state.best_ask <= 0:
            return None
        target = self._target(state)
        if target == state.position:
            return None
        return self._move(update.symbol, state, target)

    def _target(self, s: SymbolState) -> int:
        if s.obi_5 > self.threshold and s.tfi_5s > self.threshold:
            return 1
        if s.obi_5 < -self.threshold and s.tfi_5s < -self.threshold:
            return -1
        return 0

    def _move(self, symbol: str, s: SymbolState, target: int) -> Decision:
        # Buy at the ask, sell at the bid: a taker's fills.
        price = s.best_ask if target > s.position else s.best_bid
        if s.position:
            s.realized += s.position * (price - s.entry)
        s.position, s.entry = target, price
        reason = f"obi5={s.obi_5:+.2f} tfi5s={s.tfi_5s:+.2f} realized={s.realized:+.2f}"
        return Decision(symbol, target, price, reason)


async def main(
    target: str,
    symbols: tuple[str, ...],
    threshold: float,
    credentials: security.ClientCredentials | None = None,
) -> None:
    bot = ImbalanceBot(threshold=threshold)
    client = MarketDataClient(
        target,
        Subscription(symbols=symbols),
        credentials=credentials or security.ClientCredentials(),
    )
    async for update in client.updates():
        decision = bot.on_update(update)
        if decision is not None:
            side = {1: "LONG ", 0: "FLAT ", -1: "SHORT"}[decision.position]
            print(f"{decision.symbol:<10} {side} @ {decision.price:<12g} {decision.reason}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("symbols", nargs="*")
    parser.add_argument("--target", default="127.0.0.1:50051")
    parser.add_argument("--threshold", type=float, default=0.3)
    security.add_arguments(parser)
    args = parser.parse_args()
    try:
        creds = security.from_arguments(args)
    except security.CredentialsError as exc:
        parser.error(str(exc))
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(
            main(args.target, tuple(s.upper() for s in args.symbols), args.threshold, creds)
        )
