"""An upload handler that refuses dataset uploads over settings.DATASET_MAX_UPLOAD_BYTES.

It first compares the request's Content-Length with the limit (before any byte of the
body is read), then counts the file's bytes as they arrive, so a client that lies about
the length (or sends chunked) is stopped too. It passes the data on to Django's usual
handlers (memory below FILE_UPLOAD_MAX_MEMORY_SIZE, a temporary file above): memory
stays bounded whatever the size.
"""

from django.conf import settings
from django.core.files.uploadhandler import FileUploadHandler

from finetune_studio.objects import UploadTooLarge

# Room for the multipart boundaries and the other form fields around the file.
MULTIPART_OVERHEAD_BYTES = 64 * 1024


class DatasetSizeLimitHandler(FileUploadHandler):
    def __init__(self, request=None):
        super().__init__(request)
        self.max_bytes = settings.DATASET_MAX_UPLOAD_BYTES

    def handle_raw_input(self, input_data, META, content_length, boundary, encoding=None):
        if content_length and content_length > self.max_bytes + MULTIPART_OVERHEAD_BYTES:
            raise UploadTooLarge(self.max_bytes)
        return None

    def receive_data_chunk(self, raw_data, start):
        if start + len(raw_data) > self.max_bytes:
            raise UploadTooLarge(self.max_bytes)
        return raw_data

    def file_complete(self, file_size):
        return None


def limit_dataset_uploads(request) -> None:
    """Install the limit on a Django request before anything reads its body."""
    request.upload_handlers.insert(0, DatasetSizeLimitHandler(request))
