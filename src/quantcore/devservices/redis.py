"""A throwaway redis-server (Debian's binary) on a free loopback port, without persistence.

`RedisServer(workdir).start()` returns a `redis://127.0.0.1:PORT/0` URL once PING answers.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from types import TracebackType

from quantcore.devservices.ports import LOOPBACK, free_port, is_listening
from quantcore.devservices.process import ServiceError, ServiceProcess


def redis_config(port: int, workdir: Path, extra: dict[str, str] | None = None) -> str:
    """Loopback only, no RDB/AOF files: test data must never outlive the server."""
    settings = {
        "bind": LOOPBACK,
        "port": str(port),
        "protected-mode": "yes",
        "daemonize": "no",
        "dir": str(workdir),
        "save": '""',
        "appendonly": "no",
        "logfile": '""',  # stdout, which the process log captures
        "databases": "16",
        "maxmemory": "256mb",
    }
    settings.update(extra or {})
    return "".join(f"{key} {value}\n" for key, value in settings.items())


def redis_answers(url: str) -> bool:
    """True when PING gets PONG."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


class RedisServer:
    """One redis-server living in `workdir`; stop() ends it."""

    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        die_with_parent: bool = False,
        start_timeout: float = 30.0,
        extra_config: dict[str, str] | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.port = port or free_port()
        self.start_timeout = start_timeout
        # True for test fixtures: the service ends with the process that started it.
        self.die_with_parent = die_with_parent
        self.extra_config = extra_config or {}
        self.log = self.workdir / "redis.log"
        self.process: ServiceProcess | None = None

    @property
    def pid(self) -> int:
        if self.process is None:
            raise ServiceError("not started")
        return self.process.pid

    @property
    def marker(self) -> str:
        """Text the server's command line always contains: redis-server retitles itself to
        `redis-server 127.0.0.1:PORT`, dropping the config path."""
        return f"{LOOPBACK}:{self.port}"

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    def start(self) -> str:
        """Start redis-server and wait for PING; returns the URL."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise ServiceError("redis-server is not installed (make setup-services installs it)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "redis.conf"
        config.write_text(redis_config(self.port, self.workdir, self.extra_config))
        self.process = ServiceProcess(
            "redis",
            [binary, str(config)],
            self.log,
            self.workdir,
            die_with_parent=self.die_with_parent,
        )
        self.process.start()
        try:
            self.process.wait_ready(
                lambda: is_listening(self.port) and redis_answers(self.url),
                self.start_timeout,
                "answering PING",
            )
        except ServiceError:
            self.process.stop()
            raise
        return self.url

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def __enter__(self) -> str:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
