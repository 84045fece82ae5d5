"""The object store (MinIO in Docker, MinIO or S3Proxy natively) through the minio SDK.

It is the system of record for batch data, so every step reads and writes through this one client,
configured once from the settings. Keys are the ones `mlops.layout` builds; the bucket is `S3_BUCKET`.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from minio import Minio
from minio.deleteobjects import DeleteObject
from minio.error import S3Error

from mlops.settings import Settings

log = logging.getLogger(__name__)

_MISSING_CODES = ("NoSuchKey", "NoSuchObject", "NoSuchBucket", "ResourceNotFound")


class ObjectStore:
    """Bytes, JSON and whole prefixes in one bucket."""

    def __init__(self, client: Minio, bucket: str):
        self.client = client
        self.bucket = bucket

    @classmethod
    def from_settings(cls, settings: Settings, bucket: str | None = None) -> ObjectStore:
        """The store the settings name; a malformed S3_ENDPOINT_URL is a ValueError that quotes it."""
        url = urlparse(settings.s3_endpoint_url)
        if not url.hostname:
            raise ValueError(f"S3_ENDPOINT_URL={settings.s3_endpoint_url!r}: expected http(s)://host:port")
        endpoint = url.hostname + (f":{url.port}" if url.port else "")
        client = Minio(
            endpoint,
            access_key=settings.s3_access_key,
            secret_key=settings.s3_secret_key,
            secure=url.scheme == "https",
            region=settings.s3_region,
        )
        return cls(client, bucket or settings.s3_bucket)

    def ensure_bucket(self) -> None:
        """Create the bucket if missing; safe when a concurrent step creates it first."""
        if not self.client.bucket_exists(self.bucket):
            try:
                self.client.make_bucket(self.bucket)
            except S3Error as exc:  # a concurrent step created it first
                if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise

    # -- single objects ---------------------------------------------------------------------------------------

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        """Write (or replace) one object held in memory (reports, manifests, markers); files go by `put_file`."""
        self.client.put_object(self.bucket, key, io.BytesIO(data), len(data), content_type=content_type)

    def get_bytes(self, key: str) -> bytes:
        """The object's bytes; `KeyError(key)` when it does not exist."""
        try:
            response = self.client.get_object(self.bucket, key)
        except S3Error as exc:
            if exc.code in _MISSING_CODES:
                raise KeyError(key) from None
            raise
        try:
            return response.read()
        finally:
            response.close()
            response.release_conn()

    def put_json(self, key: str, value: Any) -> None:
        """Indented with sorted keys, so that reports and manifests read and diff well in a browser."""
        self.put_bytes(key, json.dumps(value, indent=2, sort_keys=True).encode(), "application/json")

    def get_json(self, key: str) -> Any:
        """The object parsed as JSON; `KeyError(key)` when it does not exist."""
        return json.loads(self.get_bytes(key))

    def exists(self, key: str) -> bool:
        """False for a missing key or bucket; any other S3 error is raised, never read as absent."""
        try:
            self.client.stat_object(self.bucket, key)
        except S3Error as exc:
            if exc.code in _MISSING_CODES:
                return False
            raise
        return True

    def put_file(self, key: str, path: Path | str) -> None:
        """Upload a local file, streamed (multipart when large), never read whole into memory."""
        self.client.fput_object(self.bucket, key, str(path))

    def get_file(self, key: str, path: Path | str) -> None:
        """Download to `path`, streamed, creating its directory."""
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.client.fget_object(self.bucket, key, str(path))

    # -- prefixes ---------------------------------------------------------------------------------------------

    def list_keys(self, prefix: str) -> list[str]:
        """Every key under `prefix` (recursive), sorted."""
        return sorted(self._iter_keys(prefix))

    def _iter_keys(self, prefix: str) -> Iterator[str]:
        try:
            for obj in self.client.list_objects(self.bucket, prefix=prefix, recursive=True):
                if not obj.is_dir:
                    yield obj.object_name
        except S3Error as exc:
            if exc.code != "NoSuchBucket":
                raise

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under `prefix/`; returns how many were deleted."""
        prefix = prefix.rstrip("/") + "/"
        keys = self.list_keys(prefix)
        errors = list(self.client.remove_objects(self.bucket, (DeleteObject(k) for k in keys)))
        if errors:
            raise RuntimeError(f"could not delete {len(errors)} objects under {prefix}: {errors[0]}")
        return len(keys)
