"""The text that stands in for a masked value: the same every turn, revealing nothing of the value.

A placeholder is ``CAPSEM-MASKED-<KIND>-<TAG>``:

* the prefix is fixed and unusual, so that every policy can recognise it
  (``PLACEHOLDER`` is the grammar the engine allow-lists: a finding inside a
  placeholder is no finding);
* ``TAG`` is 20 characters of base32 (``A``-``Z``, ``2``-``7``): 100 bits of an
  HMAC-SHA-256 over (key id, tenant, value) with the state directory's
  placeholder key, so a value gets the same tag in every turn and every worker
  process, a different one for another tenant, and guessing a value from its
  tag means guessing the value;
* ``KIND`` (``[A-Z0-9]``, at most 24 characters) says what was found (a rule's
  name, an entity): a label beside the tag, not part of its identity.

Only ASCII letters, digits and ``-``: nothing a JSON encoder escapes, nothing
markdown or HTML reinterprets (no ``<>&"'_*`` or spaces), so the placeholder
can be written into a JSON string as is, at any nesting of JSON in JSON.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

PREFIX = "CAPSEM-MASKED-"
TAG_CHARS = 20  # x 5 bits = 100 bits
KIND_CHARS = 24
PLACEHOLDER = re.compile(rf"{PREFIX}(?:[A-Z0-9]{{1,{KIND_CHARS}}}-)?[A-Z2-7]{{{TAG_CHARS}}}")
_NOT_KIND = re.compile(r"[^A-Z0-9]+")


def tag(secret: bytes, key_id: str, tenant: str, value: str) -> str:
    """The identity of ``value`` for ``tenant`` under the key ``key_id``."""
    message = b"\0".join((key_id.encode(), tenant.encode(), value.encode("utf-8", "surrogatepass")))
    digest = hmac.new(secret, message, hashlib.sha256).digest()
    return base64.b32encode(digest).decode("ascii")[:TAG_CHARS]


def kind_label(kind: str) -> str:
    """``kind`` as the placeholder shows it: uppercase letters and digits, words joined by nothing."""
    label = _NOT_KIND.sub("", kind.upper())[:KIND_CHARS]
    return label or "VALUE"


def placeholder(tag_: str, kind: str) -> str:
    return f"{PREFIX}{kind_label(kind)}-{tag_}"


def is_placeholder(value: str) -> bool:
    """Whether ``value`` is a placeholder (a policy's allow-list: what the proxy wrote is never found again)."""
    return PLACEHOLDER.fullmatch(value) is not None


def inside_placeholder(text: str, start: int, end: int) -> bool:
    """Whether ``text[start:end]`` lies within a placeholder (allow-listed: never masked again)."""
    for match in PLACEHOLDER.finditer(text, max(0, start - len(PREFIX) - KIND_CHARS - TAG_CHARS - 1)):
        if match.start() > start:
            return False
        if match.end() >= end:
            return True
    return False
