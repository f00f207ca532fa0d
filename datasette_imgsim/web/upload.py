"""Uploads: reading a bounded request body, multipart parsing, and CSRF on Datasette 0.65."""
from __future__ import annotations

import re
import secrets
from email.message import Message
from typing import Optional

from ..errors import UploadError
from .permissions import is_datasette_1

DEFAULT_MAX_UPLOAD = 20 * 1024 * 1024
# Room in a multipart body for the other fields and the part headers.
MULTIPART_SLACK = 64 * 1024
# The upload form has a handful of fields: a body of thousands of parts is refused
# before any is parsed (300,000 tiny parts once held the event loop for 2.3 s).
MAX_PARTS = 50


# --- CSRF on Datasette 0.65 -------------------------------------------------------------
#
# 0.65 protects POSTs with asgi-csrf, whose multipart parser fails with python-multipart
# >= 0.0.26 (a TypeError, so a 500, simonw/asgi-csrf#38). For multipart POSTs to the
# upload route only, skip_csrf hands the check to check_form_csrf(), which applies
# asgi-csrf's own rule: with cookies, the form's csrftoken must equal the signed
# ds_csrftoken cookie. 1.0a checks Sec-Fetch-Site/Origin itself and has no skip_csrf.

UPLOAD_PATH = re.compile(r"/[^/]+/[^/]+/-/similar(\.json)?$")


def is_multipart_upload(scope) -> bool:
    headers = dict(scope.get("headers") or [])
    content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
    return (scope.get("method") == "POST" and content_type == b"multipart/form-data"
            and bool(UPLOAD_PATH.search(scope.get("path", ""))))


def skip_csrf(datasette, scope) -> bool:
    return not is_datasette_1(datasette) and is_multipart_upload(scope)


def check_form_csrf(datasette, request, fields: dict) -> None:
    if is_datasette_1(datasette) or not is_multipart_upload(request.scope):
        return
    if not request.headers.get("cookie"):
        return  # as asgi-csrf: no cookies, no ambient credentials to abuse
    if request.headers.get("authorization", "").startswith("Bearer "):
        return
    from itsdangerous import BadSignature, URLSafeSerializer

    cookie = request.cookies.get("ds_csrftoken", "")
    try:
        URLSafeSerializer(datasette._secret).loads(cookie, "csrftoken")
    except BadSignature:
        cookie = ""
    if not cookie or not secrets.compare_digest(fields.get("csrftoken", ""), cookie):
        raise UploadError("CSRF check failed: reload the page and try again", 403)


async def read_upload(request, limit: int) -> tuple[bytes, dict]:
    """The uploaded image and the form's other fields, reading at most about limit bytes."""
    content_type = request.headers.get("content-type", "")
    multipart = content_type.split(";")[0].strip().lower() == "multipart/form-data"
    body_limit = limit + (MULTIPART_SLACK if multipart else 0)
    from .upload_page import human_size

    too_large = f"upload too large: the limit is {human_size(limit)}"
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > body_limit:
        raise UploadError(too_large, 413)
    body = bytearray()
    while True:
        message = await request.receive()
        if message.get("type") == "http.disconnect":
            raise UploadError("the upload was interrupted")
        body.extend(message.get("body", b""))
        if len(body) > body_limit:
            raise UploadError(too_large, 413)
        if not message.get("more_body"):
            break
    if not multipart:
        data, fields = bytes(body), {}
    else:
        parts = parse_multipart(bytes(body), content_type)
        fields = {name: value.decode("utf-8", "replace") for name, (filename, value) in parts.items()
                  if filename is None}
        data = parts.get("image", (None, b""))[1]
    if not data:
        raise UploadError("no image uploaded: send a file in the form field 'image'")
    if len(data) > limit:
        raise UploadError(too_large, 413)
    return data, fields


def _header_params(name: str, value: str) -> Message:
    message = Message()
    message[name] = value
    return message


def parse_multipart(body: bytes, content_type: str) -> dict[str, tuple[Optional[str], bytes]]:
    """{field name: (filename or None, bytes)} of a multipart/form-data body.

    Datasette 0.65 has no multipart parser (1.0a's request.form(files=True) is not in it),
    so both versions use this one, on a body already bounded by read_upload.
    """
    boundary = _header_params("content-type", content_type).get_param("boundary")
    if not boundary or not isinstance(boundary, str):
        raise UploadError("malformed multipart upload: no boundary")
    # A delimiter is CRLF "--" boundary (RFC 2046); the first one may open the body.
    delimiter = b"\r\n--" + boundary.encode("latin-1")
    if len(boundary) > 200:
        raise UploadError("malformed multipart upload: boundary too long")
    if body.count(delimiter, 0) + body.startswith(delimiter[2:]) > MAX_PARTS + 1:
        raise UploadError(f"malformed multipart upload: more than {MAX_PARTS} parts", 413)
    chunks = (b"\r\n" + body).split(delimiter)
    if len(chunks) < 3:
        raise UploadError("malformed multipart upload")
    parts = {}
    for chunk in chunks[1:]:
        if chunk.startswith(b"--"):
            break
        head, sep, content = chunk.partition(b"\r\n\r\n")
        if not sep:
            raise UploadError("malformed multipart upload")
        disposition = ""
        for line in head.decode("utf-8", "replace").split("\r\n"):
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-disposition":
                disposition = value.strip()
        params = _header_params("content-disposition", disposition)
        field = params.get_param("name", header="content-disposition")
        if not isinstance(field, str):
            continue
        filename = params.get_param("filename", header="content-disposition")
        parts.setdefault(field, (filename if isinstance(filename, str) else None, content))
    return parts
