"""quantcore.logs: the JSON and text lines every process writes, the context they carry, and
how a process picks its format."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from quantcore import logs
from quantcore.cli import SUBCOMMANDS, main

RFC3339_MS_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture
def root_logging() -> Iterator[None]:
    """configure() replaces the root logger's handlers: put pytest's back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.captureWarnings(False)


def record(
    msg: str = "hello %s",
    args: tuple[Any, ...] = ("world",),
    level: int = logging.INFO,
    exc_info: Any = None,
    **extra: Any,
) -> logging.LogRecord:
    rec = logging.LogRecord("quantcore.test", level, __file__, 1, msg, args, exc_info)
    for key, value in extra.items():
        setattr(rec, key, value)
    return rec


def as_json(line: str) -> dict[str, Any]:
    assert "\n" not in line, "one object per line"
    parsed: dict[str, Any] = json.loads(line)
    return parsed


def test_a_record_is_one_json_object_with_the_process_and_record_context() -> None:
    env = {
        logs.MARKETFEED_ENV: "prices",
        logs.NAMESPACE_ENV: "markets",
        logs.POD_ENV: "prices-feed-3-abc",
        "UNRELATED": "x",
    }
    formatter = logs.JsonFormatter(logs.process_context("feed", env, shard=3))
    line = formatter.format(record(symbol="BTCUSDT", partition=7, event="book_synced"))
    entry = as_json(line)
    assert RFC3339_MS_UTC.match(entry.pop("ts"))
    assert entry == {
        "level": "INFO",
        "logger": "quantcore.test",
        "msg": "hello world",
        "component": "feed",
        "marketfeed": "prices",
        "namespace": "markets",
        "pod": "prices-feed-3-abc",
        "shard": 3,
        "symbol": "BTCUSDT",
        "partition": 7,
        "event": "book_synced",
    }
    # ts, level, logger, msg lead: a reader scanning raw lines sees them first.
    assert list(json.loads(line))[:4] == ["ts", "level", "logger", "msg"]


def test_the_timestamp_is_utc_with_milliseconds() -> None:
    rec = record()
    rec.created, rec.msecs = 1_764_918_000.0429, 42.9
    assert logs.utc_timestamp(rec) == "2025-12-05T07:00:00.042Z"


def test_process_context_leaves_out_what_the_environment_does_not_name() -> None:
    assert logs.process_context("serve", {}) == {"component": "serve"}
    assert logs.process_context("feed", {logs.POD_ENV: ""}, shard=None) == {"component": "feed"}


def test_an_exception_is_its_type_and_the_whole_traceback_in_one_field() -> None:
    try:
        raise ConnectionResetError("peer went away")
    except ConnectionResetError:
        exc_info = sys.exc_info()
    entry = as_json(logs.JsonFormatter({"component": "stream"}).format(record(exc_info=exc_info)))
    assert entry["exc_type"] == "ConnectionResetError"
    assert entry["exc"].startswith("Traceback (most recent call last):")
    assert entry["exc"].endswith("ConnectionResetError: peer went away")
    assert "test_an_exception_is_its_type" in entry["exc"]  # the frames, not just the message


class Unprintable:
    def __repr__(self) -> str:
        raise RuntimeError("no repr either")


def test_a_field_json_cannot_hold_becomes_its_repr_and_never_raises() -> None:
    formatter = logs.JsonFormatter({"component": "serve"})
    entry = as_json(
        formatter.format(
            record(
                peer=object(),
                big=2**70,
                raw=b"\xff",
                nested={"when": {1, 2}},
                broken=Unprintable(),
                symbol="ETHUSDT",
            )
        )
    )
    assert entry["peer"].startswith("<object object at ")
    assert entry["big"] == str(2**70)
    assert entry["raw"] == repr(b"\xff")
    assert entry["nested"] == repr({"when": {1, 2}})
    assert entry["broken"] == "<Unprintable: repr failed: RuntimeError>"
    assert entry["symbol"] == "ETHUSDT"  # the rest of the record is kept as is


def test_wrong_format_arguments_still_give_a_line() -> None:
    entry = as_json(logs.JsonFormatter().format(record("%d symbols", ("many",))))
    assert entry["msg"] == "'%d symbols' % ('many',) (bad format arguments)"


def test_log_context_adds_fields_inside_the_block_and_extra_wins() -> None:
    formatter = logs.JsonFormatter({"component": "feed"})
    with logs.log_context(connection="shard0-conn0", symbol="BTCUSDT"):
        inside = as_json(formatter.format(record()))
        mine = as_json(formatter.format(record(symbol="ETHUSDT")))
    after = as_json(formatter.format(record()))
    assert inside["connection"] == "shard0-conn0"
    assert inside["symbol"] == "BTCUSDT"
    assert mine["symbol"] == "ETHUSDT"
    assert "connection" not in after
    assert "symbol" not in after


async def test_each_asyncio_task_keeps_its_own_context() -> None:
    formatter = logs.JsonFormatter()
    seen: dict[str, Any] = {}

    async def connection(name: str) -> None:
        with logs.log_context(connection=name):
            await asyncio.sleep(0)  # the other task runs in between
            seen[name] = as_json(formatter.format(record()))["connection"]

    await asyncio.gather(connection("conn0"), connection("conn1"))
    assert seen == {"conn0": "conn0", "conn1": "conn1"}


def test_a_record_field_wins_over_the_process_context() -> None:
    # The operator runs in its own namespace; a record about a MarketFeed names the feed's.
    formatter = logs.JsonFormatter({"component": "operator", "namespace": "quantcore"})
    entry = as_json(formatter.format(record(namespace="markets", marketfeed="prices")))
    assert (entry["namespace"], entry["marketfeed"]) == ("markets", "prices")


def test_a_hook_turns_library_attributes_into_fields_and_hidden_ones_stay_out() -> None:
    from quantcore.operator.command import KOPF_RECORD_ATTRIBUTES, kopf_fields

    formatter = logs.JsonFormatter(
        {"component": "operator"}, hidden=KOPF_RECORD_ATTRIBUTES, hook=kopf_fields
    )
    ref = {"apiVersion": "quantcore.io/v1alpha1", "kind": "MarketFeed", "name": "prices"}
    kopf_record = record(
        "Handler 'on_change' succeeded.",
        (),
        k8s_ref={**ref, "uid": "u", "namespace": "markets"},
        k8s_skip=False,
        settings=object(),
    )
    entry = as_json(formatter.format(kopf_record))
    assert entry["marketfeed"] == "prices"
    assert entry["namespace"] == "markets"
    assert not {"k8s_ref", "k8s_skip", "settings"} & set(entry)
    pod = record(k8s_ref={"kind": "Pod", "name": "p", "namespace": "markets"})
    assert as_json(formatter.format(pod))["object"] == "Pod/markets/p"


def test_text_lines_append_the_record_fields() -> None:
    formatter = logs.TextFormatter()
    line = formatter.format(record("book reset (%s)", ("gap",), symbol="BTCUSDT", reason="gap"))
    assert line.endswith(" INFO quantcore.test book reset (gap) symbol=BTCUSDT reason=gap")
    assert formatter.format(record()).endswith(" INFO quantcore.test hello world")


@pytest.mark.parametrize(
    ("environ", "interactive", "expected"),
    [
        ({}, False, "text"),
        ({}, True, "text"),
        ({"KUBERNETES_SERVICE_HOST": "10.96.0.1"}, False, "json"),
        ({"KUBERNETES_SERVICE_HOST": "10.96.0.1"}, True, "text"),  # kubectl exec -it
        ({logs.FORMAT_ENV: "json"}, True, "json"),
        ({logs.FORMAT_ENV: " TEXT ", "KUBERNETES_SERVICE_HOST": "x"}, False, "text"),
    ],
)
def test_default_format(environ: dict[str, str], interactive: bool, expected: str) -> None:
    assert logs.default_format(environ, interactive) == expected


def test_an_unknown_format_in_the_environment_is_refused() -> None:
    with pytest.raises(ValueError, match=logs.FORMAT_ENV):
        logs.default_format({logs.FORMAT_ENV: "xml"}, interactive=False)


@pytest.mark.usefixtures("root_logging")
def test_configure_replaces_the_handlers_and_writes_json_lines() -> None:
    out = io.StringIO()
    chosen = logs.configure(
        "serve",
        log_format=None,
        level="DEBUG",
        environ={logs.FORMAT_ENV: "json", logs.POD_ENV: "serve-0"},
        stream=out,
    )
    assert chosen == "json"
    assert len(logging.getLogger().handlers) == 1
    logging.getLogger("quantcore.serve.server").debug("dropped", extra={"peer": "ipv4:1.2.3.4"})
    import warnings

    warnings.warn("a library's complaint", DeprecationWarning, stacklevel=1)
    lines = [as_json(line) for line in out.getvalue().splitlines()]
    assert [(e["component"], e["pod"], e["level"]) for e in lines] == [
        ("serve", "serve-0", "DEBUG"),
        ("serve", "serve-0", "WARNING"),
    ]
    assert lines[0]["peer"] == "ipv4:1.2.3.4"
    assert lines[1]["logger"] == "py.warnings"


@pytest.mark.usefixtures("root_logging")
def test_configure_takes_the_level_from_the_environment() -> None:
    out = io.StringIO()
    logs.configure("feed", environ={logs.LEVEL_ENV: "warning"}, stream=out)
    assert logging.getLogger().level == logging.WARNING


@pytest.mark.parametrize("command", ["feed", "replay", "stream", "serve", "operator", "up"])
def test_every_process_takes_log_format_and_level(
    command: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert command in SUBCOMMANDS
    seen: dict[str, Any] = {}

    def capture(args: Any) -> int:
        seen.update(vars(args))
        return 0

    import importlib

    module = importlib.import_module(SUBCOMMANDS[command][0])
    monkeypatch.setattr(module, "run", capture)
    required = {
        "feed": ["--routing", "r.json", "--shard", "0", "--kafka", "k", "--ws-url", "ws://x",
                 "--rest-url", "http://x"],
        "stream": ["--kafka", "k", "--redis", "redis://x", "--checkpoint", "/tmp/c"],
        "serve": ["--redis", "redis://x"],
    }.get(command, [])  # fmt: skip
    assert main([command, *required, "--log-format", "json", "--log-level", "debug"]) == 0
    assert (seen["log_format"], seen["log_level"]) == ("json", "DEBUG")
