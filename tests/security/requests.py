"""Sending one matrix row with any client: DRF's APIClient (token) or Django's Client (session)."""

import json

from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from .matrix import Api


def send(client, row: Api, ids: dict, **headers):
    url = row.url(ids)
    headers = {**row.headers, **headers}
    method = getattr(client, row.method.lower())
    is_drf = isinstance(client, APIClient)
    if row.multipart:
        upload = SimpleUploadedFile("file.bin", b"payload bytes", content_type="application/octet-stream")
        data = {"path": "extra/file.bin", "file": upload}
        headers.pop("content_type", None)
        return method(url, data, format="multipart", **headers) if is_drf else method(url, data, **headers)
    if row.body is None:
        return method(url, **headers)
    if is_drf:
        return method(url, row.body, format="json", **headers)
    headers["content_type"] = "application/json"
    return method(url, json.dumps(row.body), **headers)
