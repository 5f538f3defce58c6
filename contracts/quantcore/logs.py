"""How every quantcore process logs: one JSON object per line, or one line of text.

JSON is for a cluster's log pipeline: each line carries the process's context (which component,
shard, MarketFeed, namespace and pod wrote it; set once at start-up) and the record's own
(`symbol`, `stream`, `partition`, `query`, ...: given with `extra=` or held by `log_context`),
so a query such as `jq 'select(.symbol == "BTCUSDT")'` finds a symbol's resyncs across shards.
Text is for a terminal and for `quantcore up`'s log files: the same record, the record's own
fields appended as `key=value`.

The format comes from `--log-format`, else `QUANTCORE_LOG_FORMAT`, else `json` in a pod (not
attached to a terminal) and `text` anywhere else. The operator's planner and the chart set the
variable explicitly, with the context variables below (the pod's from the downward API).
"""

from __future__ import annotations

import argparse
import contextlib
import contextvars
import logging
import os
import sys
import time
import types
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TextIO

import orjson

FORMAT_ENV = "QUANTCORE_LOG_FORMAT"
LEVEL_ENV = "QUANTCORE_LOG_LEVEL"
# The process's context, filled where the process runs (a pod's from the downward API).
MARKETFEED_ENV = "QUANTCORE_MARKETFEED"
NAMESPACE_ENV = "QUANTCORE_NAMESPACE"
POD_ENV = "QUANTCORE_POD"
CONTEXT_ENV = {"marketfeed": MARKETFEED_ENV, "namespace": NAMESPACE_ENV, "pod": POD_ENV}

FORMATS = ("json", "text")
COMPONENTS = ("feed", "replay", "stream", "serve", "operator", "up")

# What every LogRecord has on its own: anything else on a record came from `extra=`.
_RECORD_ATTRIBUTES = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys() | {"message", "asctime", "taskName"}
)

# Fields a record adds for the duration of a block (`log_context`), per thread and asyncio task.
_NO_FIELDS: Mapping[str, object] = types.MappingProxyType({})
_context: contextvars.ContextVar[Mapping[str, object]] = contextvars.ContextVar(
    "quantcore_log_context", default=_NO_FIELDS
)


@contextlib.contextmanager
def log_context(**fields: object) -> Iterator[None]:
    """Add `fields` to every record logged inside the block (in this thread or task, and in
    the tasks it starts). A record's own `extra=` wins over them."""
    token = _context.set({**_context.get(), **fields})
    try:
        yield
    finally:
        _context.reset(token)


# --- choosing the format ---
def default_format(environ: Mapping[str, str], interactive: bool) -> str:
    """`QUANTCORE_LOG_FORMAT` when set, else JSON in a pod not attached to a terminal (a
    cluster's log pipeline reads it), else text. Raises ValueError on an unknown value."""
    given = environ.get(FORMAT_ENV, "").strip().lower()
    if given:
        if given not in FORMATS:
            raise ValueError(f"{FORMAT_ENV}={given!r}: expected one of {', '.join(FORMATS)}")
        return given
    in_pod = "KUBERNETES_SERVICE_HOST" in environ
    return "json" if in_pod and not interactive else "text"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`--log-format` and `--log-level`, shared by every long-running command."""
    parser.add_argument(
        "--log-format",
        choices=FORMATS,
        default=None,
        help=f"json (one object per line) or text (env {FORMAT_ENV}; default: json in a pod,"
        " text elsewhere)",
    )
    parser.add_argument(
        "--log-level",
        default=None,
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help=f"least severe level logged (env {LEVEL_ENV}; default INFO)",
    )


# --- the formatters ---
def utc_timestamp(record: logging.LogRecord) -> str:
    """RFC 3339 in UTC with milliseconds: 2026-12-05T07:00:00.123Z."""
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{seconds}.{int(record.msecs):03d}Z"


def _message(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except Exception:  # wrong arguments for the format: say so rather than lose the record
        return f"{_safe_repr(record.msg)} % {_safe_repr(record.args)} (bad format arguments)"


def _safe_repr(value: object) -> str:
    try:
        return repr(value)
    except Exception as exc:  # a __repr__ that raises
        return f"<{type(value).__name__}: repr failed: {type(exc).__name__}>"


def _jsonable(value: object) -> object:
    """`value` if orjson writes it as is, else its repr."""
    try:
        orjson.dumps(value)
    except Exception:
        return _safe_repr(value)
    return value


FieldHook = Callable[[logging.LogRecord], Mapping[str, object]]


class _Fields:
    """A record's own fields: the active `log_context`, its `extra=`, and a hook's."""

    def __init__(self, hidden: Iterable[str] = (), hook: FieldHook | None = None) -> None:
        self._skip = _RECORD_ATTRIBUTES | frozenset(hidden)
        self._hook = hook

    def of(self, record: logging.LogRecord) -> dict[str, object]:
        fields: dict[str, object] = dict(_context.get())
        if self._hook is not None:
            try:
                fields.update(self._hook(record))
            except Exception as exc:
                fields["log_hook_error"] = _safe_repr(exc)
        for key, value in vars(record).items():
            if key not in self._skip:
                fields[key] = value
        return fields


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, msg, the process's context, the record's
    fields, and `exc_type`/`exc` (the whole traceback in one string) for an exception. It never
    raises: a field orjson cannot write becomes its repr, a broken message says so."""

    def __init__(
        self,
        context: Mapping[str, object] | None = None,
        *,
        hidden: Iterable[str] = (),
        hook: FieldHook | None = None,
    ) -> None:
        super().__init__()
        self.context = {k: v for k, v in (context or {}).items() if v is not None}
        self._fields = _Fields(hidden, hook)

    def format(self, record: logging.LogRecord) -> str:
        try:
            return self._format(record)
        except Exception as exc:  # the formatter's own failure must not lose the record
            return orjson.dumps(
                {
                    "ts": utc_timestamp(record),
                    "level": record.levelname,
                    "logger": record.name,
                    "msg": _safe_repr(record.msg),
                    "log_format_error": _safe_repr(exc),
                }
            ).decode()

    def _format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": utc_timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "msg": _message(record),
            **self.context,
        }
        # A record's own field wins: an operator's record about a MarketFeed names its
        # namespace, not the operator pod's.
        entry.update(self._fields.of(record))
        if record.exc_info and record.exc_info[0] is not None:
            entry["exc_type"] = record.exc_info[0].__qualname__
            entry["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        try:
            return orjson.dumps(entry, option=orjson.OPT_NON_STR_KEYS).decode()
        except Exception:
            # Some field is not serialisable (an object, an int beyond 64 bits): its repr.
            fixed = {k: _jsonable(v) for k, v in entry.items()}
            return orjson.dumps(fixed, option=orjson.OPT_NON_STR_KEYS).decode()


class TextFormatter(logging.Formatter):
    """`time LEVEL logger message key=value ...`: the record's own fields, for a terminal."""

    def __init__(self, *, hidden: Iterable[str] = (), hook: FieldHook | None = None) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")
        self._fields = _Fields(hidden, hook)

    def format(self, record: logging.LogRecord) -> str:
        try:
            fields = self._fields.of(record)
        except Exception as exc:
            fields = {"log_format_error": exc}
        if not fields:
            return super().format(record)
        # Fields go before a traceback, on the message's line.
        record = logging.makeLogRecord(vars(record))
        record.msg = _message(record) + "".join(
            f" {k}={v}" if isinstance(v, str | int | float) else f" {k}={_safe_repr(v)}"
            for k, v in fields.items()
        )
        record.args = None
        return super().format(record)


# --- setting a process up ---
def process_context(
    component: str, environ: Mapping[str, str], **fields: object
) -> dict[str, object]:
    """The fields every record of this process carries: component, then what the environment
    names (MarketFeed, namespace, pod), then `fields` (e.g. shard) when not None."""
    context: dict[str, object] = {"component": component}
    for key, var in CONTEXT_ENV.items():
        if environ.get(var):
            context[key] = environ[var]
    context.update({k: v for k, v in fields.items() if v is not None})
    return context


def configure(
    component: str,
    *,
    log_format: str | None = None,
    level: str | int | None = None,
    environ: Mapping[str, str] | None = None,
    stream: TextIO | None = None,
    hidden: Iterable[str] = (),
    hook: FieldHook | None = None,
    **context: object,
) -> str:
    """Make the root logger write this process's records to `stream` (stderr) in `log_format`
    (else `QUANTCORE_LOG_FORMAT`, else by where it runs), at `level` (else
    `QUANTCORE_LOG_LEVEL`, else INFO). `context` (e.g. shard=3) joins every JSON record;
    `hidden` names record attributes a library adds that are not for the log, `hook` turns a
    library's record into fields. Replaces any handler set before. Returns the format used;
    raises ValueError on a bad environment value."""
    env = os.environ if environ is None else environ
    out = sys.stderr if stream is None else stream
    chosen = log_format or default_format(env, interactive=_isatty(out))
    if chosen not in FORMATS:
        raise ValueError(f"log format {chosen!r}: expected one of {', '.join(FORMATS)}")
    resolved_level = level or env.get(LEVEL_ENV, "").strip().upper() or "INFO"
    formatter: logging.Formatter = (
        JsonFormatter(process_context(component, env, **context), hidden=hidden, hook=hook)
        if chosen == "json"
        else TextFormatter(hidden=hidden, hook=hook)
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(resolved_level)
    # warnings.warn (a library's DeprecationWarning, ...) goes through the same handler.
    logging.captureWarnings(True)
    return chosen


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no such method, or a closed stream
        return False


def child_environment(log_format: str) -> dict[str, str]:
    """What a parent (`quantcore up`) sets for its children: its own format, whatever their
    stderr is (a log file is not a terminal)."""
    return {FORMAT_ENV: log_format}


def from_args(args: argparse.Namespace) -> dict[str, Any]:
    """`configure`'s format and level from `add_arguments`' flags."""
    return {"log_format": args.log_format, "level": args.log_level}
