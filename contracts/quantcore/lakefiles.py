"""One sink's table where it lives, a local directory or an S3 prefix: its log, its merge
table (quantcore.lakemerge), and its files. Readers ask `view` which files to read;
compaction (quantcore.lakecompaction) also fetches, publishes and removes files.

Both kinds name files by the URIs the sink's log uses (`file:/...`, `s3a://bucket/...`), so a
merged file is named as its neighbours are.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

from quantcore import lake, lakemerge


class TableFiles(Protocol):
    """A sink's table (`<sink>/<table>`)."""

    def log(self) -> dict[str, str]:
        """The sink log's batch files, name -> text."""

    def merge_names(self) -> list[str]:
        """The merge table's file names (quantcore.lakemerge)."""

    def read_merges(self, name: str) -> str | None:
        """A merge table file's text; None when it is gone (a newer one replaced it)."""

    def write_merges(self, name: str, text: str) -> None:
        """A new merge table file, whole or not at all."""

    def remove_merges(self, name: str) -> None: ...

    def fetch(self, uri: str, scratch: Path) -> Path | None:
        """A local path holding the file (a copy in `scratch`, or the file itself); None when
        it is gone."""

    def publish(self, local: Path, beside: str) -> str:
        """Move the finished file `local` into the directory of the file `beside`, under a new
        name; returns its URI."""

    def remove(self, uri: str) -> None:
        """Remove a file (no error when it is gone)."""


def merge_table(files: TableFiles) -> lakemerge.MergeTable:
    """The newest merge table, empty when there is none. A newer one may replace it while it
    is read: then the newest is read again."""
    for _ in range(3):
        newest = lakemerge.newest_name(files.merge_names())
        if newest is None:
            return lakemerge.MergeTable()
        text = files.read_merges(newest)
        if text is not None:
            return lakemerge.from_json(text)
    raise RuntimeError("the merge table kept changing while it was read")


def view(files: TableFiles) -> list[str]:
    """The URIs a reader reads (quantcore.lakemerge.view)."""
    return lakemerge.view(lake.committed_times(files.log()), merge_table(files))


def sibling(uri: str, name: str) -> str:
    """The URI of `name` in the directory of `uri`, keeping its scheme and escaping."""
    return f"{uri.rsplit('/', 1)[0]}/{name}"


def gone(error: Exception) -> bool:
    """A botocore ClientError saying the object is not there."""
    response = getattr(error, "response", {})
    return response.get("Error", {}).get("Code") in ("404", "NoSuchKey")


def remove_local(path: Path) -> None:
    """A lake file on disk and the checksum Spark's local file system writes beside it."""
    path.unlink(missing_ok=True)
    path.with_name(f".{path.name}.crc").unlink(missing_ok=True)


def merged_name() -> str:
    return f"part-merged-{uuid.uuid4().hex}.zstd.parquet"


class LocalTable:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def __str__(self) -> str:
        return str(self.directory)

    def _merges_dir(self) -> Path:
        return self.directory / lakemerge.MERGES_DIR

    def log(self) -> dict[str, str]:
        log_dir = self.directory / lake.METADATA_DIR
        if not log_dir.is_dir():
            return {}
        out = {}
        for path in log_dir.iterdir():
            if lake.is_log_file(path.name):
                try:
                    out[path.name] = path.read_text()
                except FileNotFoundError:  # Spark deleted a batch its compaction replaced
                    continue
        return out

    def merge_names(self) -> list[str]:
        directory = self._merges_dir()
        return [p.name for p in directory.iterdir()] if directory.is_dir() else []

    def read_merges(self, name: str) -> str | None:
        try:
            return (self._merges_dir() / name).read_text()
        except FileNotFoundError:
            return None

    def write_merges(self, name: str, text: str) -> None:
        directory = self._merges_dir()
        directory.mkdir(exist_ok=True)
        partial = directory / f".{name}.{uuid.uuid4().hex}.tmp"
        partial.write_text(text)
        os.replace(partial, directory / name)

    def remove_merges(self, name: str) -> None:
        (self._merges_dir() / name).unlink(missing_ok=True)

    def fetch(self, uri: str, scratch: Path) -> Path | None:
        path = Path(lake.local_path(uri))
        return path if path.is_file() else None

    def publish(self, local: Path, beside: str) -> str:
        uri = sibling(beside, local.name)
        shutil.move(local, lake.local_path(uri))
        return uri

    def remove(self, uri: str) -> None:
        remove_local(Path(lake.local_path(uri)))


def object_key(uri: str) -> str:
    """The key of an `s3a://bucket/key` URI (the log may escape the names' '=')."""
    return unquote(urlsplit(uri).path.lstrip("/"))


class S3Table:
    """A sink's table under `prefix` (ending in '/') of `bucket`, through a boto3 client."""

    def __init__(self, client: Any, bucket: str, prefix: str) -> None:
        self.client, self.bucket, self.prefix = client, bucket, prefix

    def __str__(self) -> str:
        return f"s3a://{self.bucket}/{self.prefix}"

    def _keys(self, prefix: str) -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix
        )
        return [item["Key"] for page in pages for item in page.get("Contents", [])]

    def _get(self, key: str) -> str | None:
        from botocore.exceptions import ClientError

        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
        except ClientError as error:
            if gone(error):
                return None
            raise
        text: str = body.read().decode()
        return text

    def log(self) -> dict[str, str]:
        out = {}
        for key in self._keys(f"{self.prefix}{lake.METADATA_DIR}/"):
            name = key.rsplit("/", 1)[1]
            if lake.is_log_file(name) and (text := self._get(key)) is not None:
                out[name] = text
        return out

    def merge_names(self) -> list[str]:
        return [key.rsplit("/", 1)[1] for key in self._keys(self._merges_prefix())]

    def _merges_prefix(self) -> str:
        return f"{self.prefix}{lakemerge.MERGES_DIR}/"

    def read_merges(self, name: str) -> str | None:
        return self._get(f"{self._merges_prefix()}{name}")

    def write_merges(self, name: str, text: str) -> None:
        # One PUT: an object appears whole.
        self.client.put_object(
            Bucket=self.bucket, Key=f"{self._merges_prefix()}{name}", Body=text.encode()
        )

    def remove_merges(self, name: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=f"{self._merges_prefix()}{name}")

    def fetch(self, uri: str, scratch: Path) -> Path | None:
        from botocore.exceptions import ClientError

        local = scratch / f"{uuid.uuid4().hex}.parquet"
        try:
            self.client.download_file(self.bucket, object_key(uri), str(local))
        except ClientError as error:
            local.unlink(missing_ok=True)
            if gone(error):
                return None
            raise
        return local

    def publish(self, local: Path, beside: str) -> str:
        uri = sibling(beside, local.name)
        self.client.upload_file(str(local), self.bucket, object_key(uri))
        local.unlink()
        return uri

    def remove(self, uri: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=object_key(uri))
