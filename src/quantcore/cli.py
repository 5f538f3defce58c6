"""The `quantcore` command: one entry point whose subcommands live beside their concepts."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# subcommand -> (module, help). Each module exposes `add_arguments(parser)` and `run(args)`
# and keeps heavy imports (pyspark, kopf) inside `run`, so `quantcore --help` stays fast.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "feed": ("quantcore.feed.commands.feed", "run a feed shard (websocket -> books -> Kafka)"),
    "replay": ("quantcore.feed.commands.replay", "serve recordings as Binance WS/REST"),
    "record": ("quantcore.feed.commands.record", "record exchange websocket traffic to a file"),
    "operator": ("quantcore.operator.command", "run the MarketFeed operator (kopf)"),
    "redis-acl": ("quantcore.operator.aclfile", "write a managed Redis's aclfile (init container)"),
    "serve": ("quantcore.serve.command", "run the MarketData gRPC server over Redis"),
    "history": ("quantcore.history", "a symbol's signals, books or trades from the lake"),
    "up": ("quantcore.localmode.command", "the whole pipeline on this machine, then a live view"),
    "watch": ("quantcore.client.watch", "a live terminal table of a MarketData server's signals"),
    "services": ("quantcore.devservices.command", "start/stop local Kafka, Redis and Spark"),
    "stream": ("quantcore.stream.command", "run the Spark signal job (Kafka -> signals -> Redis)"),
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="quantcore", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        module.add_arguments(sub.add_parser(name, help=help_text))
    args = parser.parse_args(argv)
    module = importlib.import_module(SUBCOMMANDS[args.command][0])
    result = module.run(args)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
