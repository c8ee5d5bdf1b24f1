"""Streaming access to the three buckets (datasets, models, logs), on S3 or local disk.

django-storages' ``open()`` on S3 loads a whole object into memory, so reads here go
through the raw object body in chunks, and uploads through boto3's managed
(multipart) transfer fed by a non-seekable hashing reader. The local backend keeps
the same contract on the file system, for standalone mode.
"""

import hashlib
import os
import shutil
import tempfile
import time
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote

from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings
from django.core import signing
from django.core.files.storage import storages
from django.urls import reverse

CHUNK_SIZE = 1024 * 1024
_LINK_SALT = "finetune_studio.objects.local-link"


class ObjectNotFound(Exception):
    pass


class StorageError(Exception):
    """Storage failed (network, permissions, S3 error); the message says what and where."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    modified: datetime | None = None


@dataclass(frozen=True)
class UploadResult:
    key: str
    size: int
    sha256: str
    crc32: str


@dataclass(frozen=True)
class Checksums:
    sha256: str
    crc32: str
    size: int


def streamed_checksums(chunks: Iterable[bytes]) -> Checksums:
    """sha256, crc32 and size of bytes read once as they stream (bounded memory whatever their size).

    The one streamed-hash helper: the registry's manifest and Ollama's blob digests both use it.
    """
    digest = hashlib.sha256()
    crc = 0
    size = 0
    for chunk in chunks:
        digest.update(chunk)
        crc = zlib.crc32(chunk, crc)
        size += len(chunk)
    return Checksums(sha256=digest.hexdigest(), crc32=f"{crc:08x}", size=size)


class _HashingReader:
    """Wraps a stream: counts, hashes and limits what is read. Deliberately not seekable."""

    def __init__(self, stream: BinaryIO, max_bytes: int | None):
        self._stream = stream
        self._max_bytes = max_bytes
        self.size = 0
        self.sha256 = hashlib.sha256()
        self.crc32 = 0

    def read(self, amount: int = -1) -> bytes:
        data = self._stream.read(amount if amount and amount > 0 else CHUNK_SIZE)
        if data:
            self.size += len(data)
            if self._max_bytes is not None and self.size > self._max_bytes:
                raise UploadTooLarge(self._max_bytes)
            self.sha256.update(data)
            self.crc32 = zlib.crc32(data, self.crc32)
        return data

    def result(self, key: str) -> UploadResult:
        return UploadResult(key=key, size=self.size, sha256=self.sha256.hexdigest(), crc32=f"{self.crc32:08x}")


class UploadTooLarge(Exception):
    def __init__(self, max_bytes: int):
        super().__init__(f"upload exceeds the limit of {max_bytes} bytes")
        self.max_bytes = max_bytes


class S3Bucket:
    def __init__(self, alias: str):
        storage = storages[alias]
        self.alias = alias
        self.name = storage.bucket_name
        self.client = storage.connection.meta.client
        self._storage = storage
        self._probe = None

    def ensure_exists(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.name)
        except ClientError:
            self.client.create_bucket(Bucket=self.name)

    def is_present(self) -> bool:
        """Whether the bucket exists: one quick try (health checks must not hang on a storage outage).

        StorageError when S3 cannot say (unreachable, refused credentials).
        """
        try:
            self._probe_client().head_bucket(Bucket=self.name)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("404", "NoSuchBucket", "NotFound"):
                return False
            raise StorageError(f"S3 {code or 'error'} on bucket {self.name}: {exc}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"storage unreachable while checking bucket {self.name}: {exc}") from exc
        return True

    def create(self) -> bool:
        """Create the bucket if it is missing; False when it was there already.

        No ACL and no bucket policy is given, so the bucket is private (S3's and MinIO's default): objects
        are reached only with credentials or through the presigned links the studio signs.
        """
        if self.is_present():
            return False
        options = {}
        if self._storage.region_name and self._storage.region_name != "us-east-1":
            options["CreateBucketConfiguration"] = {"LocationConstraint": self._storage.region_name}
        try:
            self.client.create_bucket(Bucket=self.name, **options)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "BucketAlreadyOwnedByYou":
                return False
            raise _translate(exc, self.name, "") from exc
        except BotoCoreError as exc:
            raise StorageError(f"storage unreachable while creating bucket {self.name}: {exc}") from exc
        return True

    def _probe_client(self):
        if self._probe is None:
            import boto3

            self._probe = boto3.client(
                "s3",
                endpoint_url=self._storage.endpoint_url,
                aws_access_key_id=self._storage.access_key,
                aws_secret_access_key=self._storage.secret_key,
                region_name=self._storage.region_name,
                config=BotoConfig(
                    connect_timeout=2,
                    read_timeout=2,
                    retries={"max_attempts": 1, "mode": "standard"},
                    signature_version="s3v4",
                    s3={"addressing_style": "path"},
                ),
            )
        return self._probe

    def size(self, key: str) -> int:
        try:
            return self.client.head_object(Bucket=self.name, Key=key)["ContentLength"]
        except ClientError as exc:
            raise _translate(exc, self.name, key) from exc

    def exists(self, key: str) -> bool:
        try:
            self.size(key)
        except ObjectNotFound:
            return False
        return True

    def iter_chunks(self, key: str, *, start: int = 0, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        kwargs = {"Range": f"bytes={start}-"} if start else {}
        try:
            body = self.client.get_object(Bucket=self.name, Key=key, **kwargs)["Body"]
        except ClientError as exc:
            if start and exc.response.get("Error", {}).get("Code") == "InvalidRange":
                return iter(())
            raise _translate(exc, self.name, key) from exc
        except BotoCoreError as exc:
            raise StorageError(f"storage unreachable while reading {self.name}/{key}: {exc}") from exc
        return _body_chunks(body, chunk_size, f"{self.name}/{key}")

    def read_bytes(self, key: str, *, start: int = 0) -> bytes:
        return b"".join(self.iter_chunks(key, start=start))

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.name, Prefix=prefix):
                for item in page.get("Contents", []):
                    yield ObjectInfo(key=item["Key"], size=item["Size"], modified=item.get("LastModified"))
        except ClientError as exc:
            raise _translate(exc, self.name, prefix) from exc

    def upload(
        self, key: str, stream: BinaryIO, *, content_type: str | None = None, max_bytes: int | None = None
    ) -> UploadResult:
        from boto3.s3.transfer import TransferConfig

        reader = _HashingReader(stream, max_bytes)
        extra = {"ContentType": content_type} if content_type else {}
        # A non-seekable stream is buffered part by part: memory stays under concurrency × part size (32 MiB).
        config = TransferConfig(
            multipart_threshold=8 * CHUNK_SIZE, multipart_chunksize=8 * CHUNK_SIZE, max_concurrency=4
        )
        try:
            self.client.upload_fileobj(reader, self.name, key, ExtraArgs=extra, Config=config)
        except ClientError as exc:
            raise _translate(exc, self.name, key) from exc
        except BotoCoreError as exc:
            # Connection refused/reset after botocore's own retries: a storage outage, not a bug (503, not 500).
            raise StorageError(f"storage unreachable while writing {self.name}/{key}: {exc}") from exc
        return reader.result(key)

    def put_bytes(self, key: str, data: bytes, *, content_type: str | None = None) -> None:
        extra = {"ContentType": content_type} if content_type else {}
        try:
            self.client.put_object(Bucket=self.name, Key=key, Body=data, **extra)
        except ClientError as exc:
            raise _translate(exc, self.name, key) from exc

    def delete_prefix(self, prefix: str) -> int:
        keys = [info.key for info in self.list(prefix)]
        for start in range(0, len(keys), 1000):
            batch = [{"Key": key} for key in keys[start : start + 1000]]
            try:
                response = self.client.delete_objects(Bucket=self.name, Delete={"Objects": batch, "Quiet": True})
            except ClientError as exc:
                raise _translate(exc, self.name, prefix) from exc
            if response.get("Errors"):
                first = response["Errors"][0]
                raise StorageError(f"could not delete {first['Key']} from {self.name}: {first.get('Message')}")
        return len(keys)

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.name, Key=key)
        except ClientError as exc:
            raise _translate(exc, self.name, key) from exc

    def presigned_url(self, key: str, *, filename: str, expires_in: int | None = None) -> str:
        expires_in = min(expires_in or settings.PRESIGNED_URL_TTL, settings.PRESIGNED_URL_TTL)
        params = {
            "Bucket": self.name,
            "Key": key,
            "ResponseContentDisposition": f"attachment; filename=\"{filename}\"; filename*=UTF-8''{quote(filename)}",
        }
        return _public_client(self.client).generate_presigned_url("get_object", Params=params, ExpiresIn=expires_in)


_public_clients: dict = {}


def _public_client(client):
    """A client signing for the public endpoint when browsers reach S3 under another host name."""
    if settings.S3_PUBLIC_ENDPOINT_URL == settings.S3_ENDPOINT_URL:
        return client
    if settings.S3_PUBLIC_ENDPOINT_URL not in _public_clients:
        import boto3

        _public_clients[settings.S3_PUBLIC_ENDPOINT_URL] = boto3.client(
            "s3",
            endpoint_url=settings.S3_PUBLIC_ENDPOINT_URL,
            aws_access_key_id=settings.S3_ACCESS_KEY_ID,
            aws_secret_access_key=settings.S3_SECRET_ACCESS_KEY,
            region_name=settings.S3_REGION,
            config=BotoConfig(signature_version="s3v4", s3={"addressing_style": "path"}),
        )
    return _public_clients[settings.S3_PUBLIC_ENDPOINT_URL]


def _body_chunks(body, chunk_size: int, where: str) -> Iterator[bytes]:
    """An object's bytes as they stream; a connection lost mid-body (after botocore's retries) is a StorageError,
    like any other storage outage, so callers' retries and 503s cover it."""
    try:
        yield from body.iter_chunks(chunk_size)
    except BotoCoreError as exc:
        raise StorageError(f"storage connection lost while reading {where}: {exc}") from exc
    finally:
        body.close()


def _translate(exc: ClientError, bucket: str, key: str) -> Exception:
    code = exc.response.get("Error", {}).get("Code", "")
    if code in ("NoSuchKey", "404", "NotFound"):
        return ObjectNotFound(f"{bucket}/{key} does not exist")
    return StorageError(f"S3 {code or 'error'} on {bucket}/{key}: {exc}")


class LocalBucket:
    def __init__(self, alias: str):
        self.alias = alias
        self.name = alias
        self.root = Path(storages[alias].location)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root.resolve() not in path.parents:
            raise StorageError(f"key {key!r} escapes the {self.alias} bucket")
        return path

    def ensure_exists(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    def is_present(self) -> bool:
        # Folders are made by the first write: a local bucket is never missing.
        return True

    def create(self) -> bool:
        existed = self.root.is_dir()
        self.root.mkdir(parents=True, exist_ok=True)
        return not existed

    def size(self, key: str) -> int:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            raise ObjectNotFound(f"{self.alias}/{key} does not exist") from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def iter_chunks(self, key: str, *, start: int = 0, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        try:
            handle = open(self._path(key), "rb")  # noqa: SIM115  (closed by the generator)
        except FileNotFoundError:
            raise ObjectNotFound(f"{self.alias}/{key} does not exist") from None
        return _read_chunks(handle, start, chunk_size)

    def read_bytes(self, key: str, *, start: int = 0) -> bytes:
        return b"".join(self.iter_chunks(key, start=start))

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        if not self.root.exists():
            return
        for directory, _dirs, files in os.walk(self.root):
            for filename in sorted(files):
                path = Path(directory) / filename
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix) and not filename.startswith(".upload-"):
                    stat = path.stat()
                    yield ObjectInfo(key=key, size=stat.st_size, modified=datetime.fromtimestamp(stat.st_mtime))

    def upload(
        self, key: str, stream: BinaryIO, *, content_type: str | None = None, max_bytes: int | None = None
    ) -> UploadResult:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        reader = _HashingReader(stream, max_bytes)
        fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=".upload-")
        try:
            with os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(reader, out, CHUNK_SIZE)
            os.replace(temp_name, path)
        except BaseException:
            Path(temp_name).unlink(missing_ok=True)
            raise
        return reader.result(key)

    def put_bytes(self, key: str, data: bytes, *, content_type: str | None = None) -> None:
        import io

        self.upload(key, io.BytesIO(data))

    def delete_prefix(self, prefix: str) -> int:
        keys = [info.key for info in self.list(prefix)]
        for key in keys:
            self._path(key).unlink(missing_ok=True)
        return len(keys)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def presigned_url(self, key: str, *, filename: str, expires_in: int | None = None) -> str:
        """A signed, expiring link served by ``local_object_download``: the file-storage twin of S3's."""
        expires_in = min(expires_in or settings.PRESIGNED_URL_TTL, settings.PRESIGNED_URL_TTL)
        token = signing.dumps(
            {"b": self.alias, "k": key, "f": filename, "e": int(time.time()) + expires_in}, salt=_LINK_SALT
        )
        return reverse("local-object-download", kwargs={"token": token})


def _read_chunks(handle: BinaryIO, start: int, chunk_size: int) -> Iterator[bytes]:
    with handle:
        handle.seek(start)
        while chunk := handle.read(chunk_size):
            yield chunk


def read_local_link(token: str) -> tuple[LocalBucket, str, str]:
    """Check a local link's signature and expiry; raise signing.BadSignature when it is not valid."""
    payload = signing.loads(token, salt=_LINK_SALT)
    if payload["e"] < time.time():
        raise signing.SignatureExpired("link expired")
    return LocalBucket(payload["b"]), payload["k"], payload["f"]


_buckets: dict = {}


def bucket(alias: str) -> S3Bucket | LocalBucket:
    """The bucket behind a logical name: ``datasets``, ``models`` or ``logs``."""
    if alias not in settings.BUCKETS:
        raise KeyError(f"unknown bucket {alias!r}")
    cache_key = (alias, settings.STORAGE_BACKEND, settings.S3_ENDPOINT_URL, str(settings.LOCAL_STORAGE_ROOT))
    if cache_key not in _buckets:
        _buckets[cache_key] = S3Bucket(alias) if settings.STORAGE_BACKEND == "s3" else LocalBucket(alias)
    return _buckets[cache_key]


def buckets_missing() -> list[str]:
    """The logical names (``datasets``, …) whose bucket does not exist; StorageError when storage cannot say."""
    return [alias for alias in settings.BUCKETS if not bucket(alias).is_present()]


def buckets_create() -> dict[str, bool]:
    """Create every missing bucket (private); maps each logical name to whether it was created now."""
    return {alias: bucket(alias).create() for alias in settings.BUCKETS}


def reset_bucket_cache() -> None:
    _buckets.clear()
    _public_clients.clear()
