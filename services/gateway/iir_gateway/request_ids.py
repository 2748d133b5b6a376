"""What may name a request upstream (`X-Request-ID`): a client's request id, a batch line's `custom_id`."""

from __future__ import annotations

import re

_REQUEST_ID = re.compile(rb"[\w\-.:]{1,128}")  # bytes: `\w` is ASCII only


def valid_request_id(value: bytes | str) -> bool:
    """1 to 128 ASCII letters, digits, `_`, `-`, `.` or `:`: safe in a header and in logs."""
    raw = value.encode("utf-8", "surrogatepass") if isinstance(value, str) else value
    return _REQUEST_ID.fullmatch(raw) is not None
