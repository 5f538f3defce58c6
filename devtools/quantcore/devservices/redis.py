"""A throwaway redis-server (Debian's binary) on a free loopback port, without persistence.

`RedisServer(workdir).start()` returns a `redis://127.0.0.1:PORT/0` URL once PING answers.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from quantcore.devservices.ports import LOOPBACK, free_port, is_listening
from quantcore.devservices.process import ManagedService, ServiceError


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


class RedisServer(ManagedService):
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
        super().__init__(
            workdir, "redis.log", die_with_parent=die_with_parent, start_timeout=start_timeout
        )
        self.port = port or free_port()
        self.extra_config = extra_config or {}

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
        self._launch(
            "redis",
            [binary, str(config)],
            lambda: is_listening(self.port) and redis_answers(self.url),
            "answering PING",
        )
        return self.url
