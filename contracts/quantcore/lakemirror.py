"""A lake on S3 (`s3a://bucket/prefix`, where a MarketFeed's `spec.lake` puts it), read through
a local mirror: before a read, the committed files it needs are copied into a local directory
laid out as a local lake, with a sink log naming the copies, so the local readers
(quantcore.lakereader, the History RPC) read it as they read any local lake.

Only committed files are copied, chosen through each sink's log and merge table on S3 exactly
as a local read chooses them (quantcore.lakefiles.view), and only the symbol's partitions for
the days asked. A committed file never changes, so a copy is made once and reused; a file the log
names but the bucket no longer holds (its lifecycle rule expired it) is skipped, as a local
read skips a file retention removed. The mirror is a cache: removing it loses nothing, and it
is kept under a byte budget by removing the copies used longest ago (never one a read may
still be using: those used within IN_USE_S). A log naming a removed copy does no harm: local
reads skip a committed file that is not there.

The S3 client is boto3's, configured the way the AWS SDKs are (AWS_ENDPOINT_URL_S3,
AWS_REGION, the credential chain: keys, a web identity on EKS).
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from quantcore import lake, lakefiles

SCHEME = "s3a"
IN_USE_S = 600.0  # a copy used this recently may be under a running read: never evicted


@dataclass(frozen=True)
class Location:
    bucket: str
    prefix: str  # "" or ending in "/"


def parse(uri: str) -> Location:
    """`s3a://bucket/prefix` -> its bucket and key prefix; ValueError for anything else."""
    parts = urlsplit(uri)
    if parts.scheme != SCHEME or not parts.netloc:
        raise ValueError(f"not an s3a:// location: {uri!r}")
    prefix = parts.path.strip("/")
    return Location(parts.netloc, f"{prefix}/" if prefix else "")


def is_remote(location: str) -> bool:
    return location.startswith(f"{SCHEME}://")


def s3_client() -> Any:
    """An S3 client configured from the environment."""
    import boto3
    from botocore.config import Config

    # Path-style addressing: what S3 APIs other than AWS's (the test ground's) answer.
    return boto3.client("s3", config=Config(s3={"addressing_style": "path"}))


class Mirror:
    """The lake at `uri` mirrored under `cache`; `sync` before each read."""

    def __init__(
        self, uri: str, cache: Path, client: Any | None = None, max_bytes: int = 1 << 30
    ) -> None:
        self.location = parse(uri)
        self.cache = cache
        self.max_bytes = max_bytes
        self._client = client or s3_client()
        self._lock = threading.Lock()  # one sync at a time: they write the same local logs

    def _keys(self, prefix: str, delimiter: str = "") -> tuple[list[str], list[str]]:
        """(keys, common prefixes) under `prefix`."""
        keys: list[str] = []
        prefixes: list[str] = []
        pages = self._client.get_paginator("list_objects_v2").paginate(
            Bucket=self.location.bucket, Prefix=prefix, Delimiter=delimiter
        )
        for page in pages:
            keys += [item["Key"] for item in page.get("Contents", [])]
            prefixes += [item["Prefix"] for item in page.get("CommonPrefixes", [])]
        return keys, prefixes

    def _sinks(self, table: str) -> list[str]:
        """Each sink's key prefix of `table` (`<prefix><sink>/<table>/`), or the lake's own
        when the location is one sink."""
        root = self.location.prefix
        _, children = self._keys(root, delimiter="/")
        candidates = [f"{root}{table}/", *(f"{child}{table}/" for child in sorted(children))]
        return [c for c in candidates if self._keys(f"{c}{lake.METADATA_DIR}/")[0]]

    def _copy(self, key: str, local: Path) -> bool:
        """The object at `key` into `local` (whole or not at all); False when it is gone."""
        from botocore.exceptions import ClientError

        if local.is_file():
            return True
        local.parent.mkdir(parents=True, exist_ok=True)
        partial = local.with_name(f".{local.name}.{os.getpid()}.part")
        try:
            self._client.download_file(self.location.bucket, key, str(partial))
        except ClientError as error:
            partial.unlink(missing_ok=True)
            if lakefiles.gone(error):
                return False
            raise
        partial.replace(local)
        return True

    def sync(self, table: str, symbol: str, first_day: str, last_day: str) -> int:
        """Copy `symbol`'s committed files of `table` for first_day..last_day into the mirror,
        and rewrite each mirrored sink's log to name every copy it holds. Returns how many
        files were copied now."""
        copied = 0
        bucket = f"{SCHEME}://{self.location.bucket}/"
        with self._lock:
            for table_prefix in self._sinks(table):
                local_dir = self.cache / table_prefix[len(self.location.prefix) :]
                files = lakefiles.S3Table(self._client, self.location.bucket, table_prefix)
                committed = lakefiles.view(files)
                for uri in lake.select_files(committed, symbol, first_day, last_day):
                    if not uri.startswith(bucket):
                        continue  # a log naming another bucket's file: not this lake's
                    key = lakefiles.object_key(uri)
                    local = local_dir / key[len(table_prefix) :]
                    had = local.is_file()
                    if self._copy(key, local):
                        copied += not had
                        os.utime(local)  # used now: the last to be evicted
                self._write_log(local_dir, table_prefix, committed)
            self.evict()
        return copied

    def evict(self, now: float | None = None) -> list[Path]:
        """Remove the copies used longest ago until the mirror fits its budget, sparing those
        used within IN_USE_S. Returns what it removed."""
        now = time.time() if now is None else now
        copies = [(p.stat().st_mtime, p.stat().st_size, p) for p in self.cache.rglob("*.parquet")]
        total = sum(size for _, size, _ in copies)
        removed = []
        for used, size, path in sorted(copies, key=lambda c: c[0]):
            if total <= self.max_bytes or now - used < IN_USE_S:
                break
            path.unlink()
            total -= size
            removed.append(path)
        return removed

    def _write_log(self, local_dir: Path, table_prefix: str, committed: list[str]) -> None:
        """The mirrored sink's log: one batch naming the copies of files S3's log commits."""
        entries = []
        for uri in committed:
            key = lakefiles.object_key(uri)
            local = local_dir / key[len(table_prefix) :]
            if local.is_file():
                stat = local.stat()
                entries.append(
                    lake.add_entry(local.as_uri(), stat.st_size, int(stat.st_mtime * 1000))
                )
        log_dir = local_dir / lake.METADATA_DIR
        log_dir.mkdir(parents=True, exist_ok=True)
        partial = log_dir / f".0.{os.getpid()}.part"
        partial.write_text(lake.log_text(entries))
        partial.replace(log_dir / "0")
