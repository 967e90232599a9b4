"""The secret the proxy keeps in its state directory to make placeholders: loaded, made once, never swapped silently.

Redaction (masking what a policy finds, restoring the client's value in the
reply) needs placeholders that are the same every turn and reveal nothing of
the value they stand for: a keyed hash of it. The key must outlive restarts
(a conversation's history carries last week's placeholders) and be the same
for every worker process and every instance sharing the directory, so it
lives in the state directory, beside the record of delivered replies:

* ``placeholder.key``: 32 random bytes, mode 0600. Made once: written whole
  to a temporary file, then linked to its name (``os.link`` fails if the name
  exists), so two processes starting together agree on one key and neither
  ever reads a half-written one.
* ``placeholder.key.id``: the key's id, the first 16 hex digits of its
  SHA-256 (the key itself is never logged, shown or sent). It is what lets
  the proxy tell a first start from a lost key.

A key that is gone while its id file says one existed, or that is damaged
(not 32 bytes, unreadable), is logged at ERROR and replaced by a new key with
a NEW id (a damaged file is renamed ``placeholder.key.damaged-<UTC time>``,
never deleted): placeholders made with the old key no longer match, and
``/health`` (``state.placeholder_key_id``) shows the operator it changed.
Nothing is replaced silently.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

log = logging.getLogger("capsem_proxyd.state")

KEY_FILE = "placeholder.key"
ID_FILE = "placeholder.key.id"
KEY_BYTES = 32
_ID_HEX_DIGITS = 16


@dataclass(frozen=True, slots=True)
class PlaceholderKey:
    """The key and its id; ``repr`` shows the id only."""

    id: str
    secret: bytes

    def __repr__(self) -> str:
        return f"PlaceholderKey(id={self.id!r})"


def key_id(secret: bytes) -> str:
    """What names ``secret`` in logs and ``/health``: a prefix of its SHA-256, which does not reveal it."""
    return hashlib.sha256(secret).hexdigest()[:_ID_HEX_DIGITS]


def load_placeholder_key(directory: Path) -> PlaceholderKey:
    """The key in ``directory``, made there (and the directory, mode 0700) when there is none; a missing
    or damaged key replaced by a new one, logged at ERROR. Raises OSError when the directory is unusable."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = directory / KEY_FILE
    remembered = _remembered_id(directory)
    try:
        secret = path.read_bytes()
    except FileNotFoundError:
        return _lost(directory, remembered)
    except OSError as error:
        if not path.is_file():
            raise  # a folder in its place, a permission problem on the directory: an operator's error
        return _damaged(directory, f"unreadable: {error.strerror or error}")
    if len(secret) != KEY_BYTES:
        return _damaged(directory, f"{len(secret)} bytes instead of {KEY_BYTES}")
    key = PlaceholderKey(key_id(secret), secret)
    if remembered != key.id:
        _remember(directory, key.id)  # an id file lost or stale: the key file is the truth
    return key


def read_placeholder_key(directory: Path) -> PlaceholderKey | None:
    """The key ``load_placeholder_key`` made (in ``start``'s preflight, before the worker processes fork),
    read without making or replacing anything; None when there is none to read. What an instance shows
    in ``/health``: an instance that never serves a stored reply must not even create the directory."""
    try:
        secret = (directory / KEY_FILE).read_bytes()
    except FileNotFoundError:
        return None
    except OSError as error:
        log.error("the placeholder key %s is unreadable: %s", directory / KEY_FILE, error.strerror or error)
        return None
    if len(secret) != KEY_BYTES:
        log.error("the placeholder key %s is damaged (%d bytes instead of %d); a restart replaces it",
                  directory / KEY_FILE, len(secret), KEY_BYTES)
        return None
    return PlaceholderKey(key_id(secret), secret)


def _lost(directory: Path, remembered: str | None) -> PlaceholderKey:
    key = _create(directory)
    if remembered is not None and remembered != key.id:
        log.error("the placeholder key %s (id %s) is missing; a new key was made (id %s): placeholders made "
                  "with the old key no longer match", directory / KEY_FILE, remembered, key.id)
    elif remembered is None:
        log.info("placeholder key made in %s (id %s)", directory, key.id)
    return key


def _damaged(directory: Path, problem: str) -> PlaceholderKey:
    path = directory / KEY_FILE
    aside = path.with_name(f"{KEY_FILE}.damaged-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S.%fZ')}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        pass  # another process set it aside first, and has made (or is making) the new key
    key = _create(directory)
    log.error("the placeholder key %s is damaged (%s): moved aside to %s and a new key was made (id %s): "
              "placeholders made with the old key no longer match", path, problem, aside.name, key.id)
    return key


def _create(directory: Path) -> PlaceholderKey:
    """A new key at its name, or the one another process made a moment before (the first link wins)."""
    path = directory / KEY_FILE
    temporary = directory / f".{KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(secrets.token_bytes(KEY_BYTES))
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass
    finally:
        os.unlink(temporary)
    secret = path.read_bytes()
    if len(secret) != KEY_BYTES:
        raise OSError(f"{path}: {len(secret)} bytes instead of {KEY_BYTES} right after it was made")
    key = PlaceholderKey(key_id(secret), secret)
    _remember(directory, key.id)
    return key


def _remembered_id(directory: Path) -> str | None:
    try:
        return (directory / ID_FILE).read_text(encoding="ascii").strip() or None
    except (OSError, UnicodeDecodeError):
        return None


def _remember(directory: Path, identifier: str) -> None:
    temporary = directory / f".{ID_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
    temporary.write_text(identifier + "\n", encoding="ascii")
    os.replace(temporary, directory / ID_FILE)


def key_problem(directory: Path) -> str | None:
    """What ``load_placeholder_key`` would replace, said without changing anything (for ``check``)."""
    path = directory / KEY_FILE
    try:
        size = len(path.read_bytes())
    except FileNotFoundError:
        remembered = _remembered_id(directory)
        return None if remembered is None else f"the placeholder key (id {remembered}) is missing"
    except OSError as error:
        return f"the placeholder key is unreadable ({error.strerror or error})"
    return None if size == KEY_BYTES else f"the placeholder key is damaged ({size} bytes instead of {KEY_BYTES})"
