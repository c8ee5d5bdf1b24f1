"""Multipart file uploads streamed straight into the models bucket: no temp file, bounded memory.

Django hands each chunk of the ``file`` part to ``StorageUploadHandler``, which passes it
through a small bounded queue to a thread running ``objects.bucket("models").upload`` (boto3's
managed multipart upload, hashing sha256 and crc32 as it reads). The request thread blocks
when storage is slower than the client, so at most a few chunks are ever held in memory.

The target path is a form field that must come *before* the file part (``curl -F path=… -F
file=@…``; browsers and ``requests`` send fields in that order): it is validated before any
storage call, and the object key is built by the server from the model's prefix.
"""

import queue
import threading
from typing import BinaryIO

from django.core.files.uploadedfile import UploadedFile
from django.core.files.uploadhandler import FileUploadHandler
from django.http.multipartparser import MultiPartParser as DjangoMultiPartParser
from django.http.multipartparser import MultiPartParserError
from rest_framework import exceptions
from rest_framework.parsers import BaseParser, DataAndFiles

from finetune_studio.api import RequestTooLarge, ServiceUnavailable
from finetune_studio.keys import InvalidName, clean_relative_path
from finetune_studio.objects import StorageError, UploadResult, UploadTooLarge, bucket

from .artifacts import content_type_of

CHUNK_SIZE = 1024 * 1024
QUEUE_CHUNKS = 4  # memory bound: about this many chunks in flight between the request and storage
_EOF = object()
_ABORT = object()


class UploadAborted(Exception):
    """The request side gave up (client gone, bad form): storage must not keep a partial object."""


class _QueueReader:
    """A non-seekable file object fed by the request thread; what boto3's transfer reads from."""

    def __init__(self, chunks: queue.Queue):
        self._chunks = chunks
        self._pending = b""
        self._finished = False

    def read(self, amount: int = -1) -> bytes:
        while not self._finished and (amount < 0 or len(self._pending) < amount):
            item = self._chunks.get()
            if item is _ABORT:
                raise UploadAborted("upload aborted by the request side")
            if item is _EOF:
                self._finished = True
                break
            self._pending += item
        if amount < 0:
            data, self._pending = self._pending, b""
        else:
            data, self._pending = self._pending[:amount], self._pending[amount:]
        return data


class StreamedFile(UploadedFile):
    """What ends up in ``request.FILES``: the finished upload's key, size and checksums, no content."""

    def __init__(self, result: UploadResult, *, name: str, content_type: str | None):
        super().__init__(file=None, name=name, content_type=content_type, size=result.size)
        self.result = result

    def close(self):
        return None


class StorageUploadHandler(FileUploadHandler):
    chunk_size = CHUNK_SIZE

    def __init__(self, *, key_for_path, max_bytes: int):
        super().__init__()
        self._key_for_path = key_for_path
        self._max_bytes = max_bytes
        self._chunks: queue.Queue = queue.Queue(maxsize=QUEUE_CHUNKS)
        self._thread: threading.Thread | None = None
        self._outcome: dict = {}
        self.parser = None  # set by _FieldExposingParser: its ``_post`` holds the fields parsed so far
        self.path: str | None = None
        self.received = 0

    # Django's handler interface -----------------------------------------------------------------
    def handle_raw_input(self, input_data, META, content_length, boundary, encoding=None):
        if content_length and content_length > self._max_bytes + 64 * 1024:
            raise RequestTooLarge(f"The file is larger than the limit of {self._max_bytes} bytes.")
        return None

    def new_file(self, field_name, file_name, content_type, content_length, charset=None, content_type_extra=None):
        super().new_file(field_name, file_name, content_type, content_length, charset, content_type_extra)
        if field_name != "file":
            raise exceptions.ValidationError({field_name: ["Only the 'file' field may carry a file."]})
        if self._thread is not None:
            raise exceptions.ValidationError({"file": ["Send one file per request."]})
        path = getattr(self.parser, "_post", {}).get("path")
        if not path:
            raise exceptions.ValidationError(
                {"path": ["Send the 'path' field (e.g. lora_adapters/adapter_model.safetensors) before 'file'."]}
            )
        try:
            self.path = clean_relative_path(path)
        except InvalidName as exc:
            raise exceptions.ValidationError({"path": [str(exc)]}) from None
        # The stored content type comes from the path, never from the client (links must not serve HTML).
        self._start(self._key_for_path(self.path), content_type_of(self.path))

    def receive_data_chunk(self, raw_data, start):
        self.received += len(raw_data)
        if self.received > self._max_bytes:
            self.abort()
            raise RequestTooLarge(f"The file is larger than the limit of {self._max_bytes} bytes.")
        while True:
            self._raise_if_storage_failed()
            try:
                self._chunks.put(raw_data, timeout=0.5)
                return None
            except queue.Full:
                continue

    def file_complete(self, file_size):
        self._put(_EOF)
        self._thread.join()
        self._raise_if_storage_failed()
        return StreamedFile(self._outcome["result"], name=self.file_name, content_type=self.content_type)

    def upload_interrupted(self):
        self.abort()

    # Ours ---------------------------------------------------------------------------------------
    def _start(self, key: str, content_type: str | None) -> None:
        reader = _QueueReader(self._chunks)

        def run() -> None:
            try:
                self._outcome["result"] = bucket("models").upload(
                    key, reader, content_type=content_type, max_bytes=self._max_bytes
                )
            except BaseException as exc:  # handed to the request thread, which reports it
                self._outcome["error"] = exc
                # Unblock a request thread waiting on a full queue.
                while not self._chunks.empty():
                    self._chunks.get_nowait()

        self._thread = threading.Thread(target=run, name=f"upload {key}", daemon=True)
        self._thread.start()

    def _put(self, item) -> None:
        while self._thread.is_alive():
            try:
                self._chunks.put(item, timeout=0.5)
                return
            except queue.Full:
                continue

    def _raise_if_storage_failed(self) -> None:
        error = self._outcome.get("error")
        if error is None:
            return
        if isinstance(error, UploadTooLarge):
            raise RequestTooLarge(f"The file is larger than the limit of {self._max_bytes} bytes.")
        if isinstance(error, StorageError):
            raise ServiceUnavailable(f"Storage failed while uploading: {error}")
        raise ServiceUnavailable(f"Storage failed while uploading: {error.__class__.__name__}: {error}")

    def abort(self) -> None:
        """Stop the storage upload without completing it (boto3 aborts a multipart upload it started)."""
        if self._thread is None or "result" in self._outcome or "error" in self._outcome:
            return
        while self._thread.is_alive():
            try:
                self._chunks.put(_ABORT, timeout=0.5)
                break
            except queue.Full:
                continue
        self._thread.join(timeout=30)


class _FieldExposingParser(DjangoMultiPartParser):
    """Django's parser, letting our handler read the fields parsed before the file part (``_post``)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for handler in self._upload_handlers:
            if isinstance(handler, StorageUploadHandler):
                handler.parser = self


class StreamingMultiPartParser(BaseParser):
    """DRF parser for ``multipart/form-data`` that streams the file to storage through the request's handlers."""

    media_type = "multipart/form-data"

    def parse(self, stream: BinaryIO, media_type=None, parser_context=None):
        request = parser_context["request"]
        meta = request.META.copy()
        meta["CONTENT_TYPE"] = media_type
        try:
            parser = _FieldExposingParser(meta, stream, request.upload_handlers, parser_context.get("encoding"))
            data, files = parser.parse()
        except MultiPartParserError as exc:
            raise exceptions.ParseError(f"Multipart form parse error: {exc}")
        return DataAndFiles(data, files)
