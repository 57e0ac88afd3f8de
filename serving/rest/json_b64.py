"""Binary strings in REST JSON: TF Serving's ``{"b64": "<base64>"}`` objects."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

_B64_SPACE = re.compile(r"[ \t\n\v\f\r]")
_B64_BODY = re.compile(r"([A-Za-z0-9+/]*)([=.]*)")
_B64_PADDING = {0: 0, 2: 2, 3: 1}  # data length % 4 -> '=' count absl insists on, if any


def is_b64(value: Any) -> bool:
    """``{"b64": "<string>"}`` with no other key (IsValBase64Object)."""
    return type(value) is dict and len(value) == 1 and type(value.get("b64")) is str


def b64_decode(text: str) -> bytes | None:
    """absl::Base64Unescape: whitespace ignored, '=' or '.' padding optional but exact if given.

    None when ``text`` is not base64 (the stdlib decoder is stricter about whitespace and
    padding, and laxer about stray characters, so it only does the final step).
    """
    match = _B64_BODY.fullmatch(_B64_SPACE.sub("", text))
    if not match:
        return None
    data, padding = match.groups()
    if len(data) % 4 == 1 or (padding and len(padding) != _B64_PADDING[len(data) % 4]):
        return None
    return binascii.a2b_base64(data + "=" * (-len(data) % 4))


def b64_object(value: bytes | str) -> dict[str, str]:
    """``{"b64": ...}`` for a binary output value."""
    raw = value.encode("utf-8") if isinstance(value, str) else bytes(value)
    return {"b64": base64.b64encode(raw).decode("ascii")}
