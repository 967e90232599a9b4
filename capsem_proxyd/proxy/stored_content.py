"""``--stored-content``: what a request may pull into the model's context from the provider's storage.

A request can name content the proxy never sees: an earlier reply
(``previous_response_id``), a conversation, an item, a stored prompt, cached
content, uploaded files, vector stores, containers and skills, provider-run
MCP servers. The provider resolves the name and the model reads the content;
no policy did. Each dialect declares where its API puts such references
(``Dialect.references``); this module decides what happens to them:

* ``checked`` (the default): only what this proxy itself delivered,
  unblocked, to the same tenant is admitted (``ResponseStore``): a reply by
  its id, one of its output items by id (reasoning or a compaction named by
  id alone, an ``item_reference``), a compaction's sealed summary by its
  digest; anything else is refused with a 403 naming the field. A reply is
  recorded, with its items, when a JSON reply passes its checks, or just
  before the event that completes a stream goes out (so a client that
  follows up at once finds it); a stream blocked or cut after its id went
  out is withdrawn. Requests that ask the provider not to store
  (``store: false``) record nothing, so their items are never admitted by
  id (a sealed summary is given back whole: it is no reference).
* ``refuse``: every reference is refused.
* ``allow``: every reference goes through, logged at WARNING and audited.

Every decision on a reference is reported to the recorders (the audit log's
``stored_content`` records). The costs stay with the requests concerned:
finding references is a walk of the body's structure (microseconds: fields,
messages, parts, never their text); the store is read only for a request that
names a reply, written only for a reply the provider stores, and not even
opened by a process that never needs it.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterable
from typing import Any

from capsem_proxyd.config import Settings
from capsem_proxyd.dialects.base import Dialect
from capsem_proxyd.errors import stored_content_refused, stored_content_unavailable
from capsem_proxyd.exchange import Exchange
from capsem_proxyd.observe.logs import escape_controls
from capsem_proxyd.observe.recorders import Recorder
from capsem_proxyd.proxy.response_store import ResponseStore, state_directory
from capsem_proxyd.views import StoredItem, StoredReference

log = logging.getLogger("capsem_proxyd.stored")

MODES = ("checked", "refuse", "allow")
# The kinds of reference that can name what this proxy delivered, and the key each is recorded under.
CHECKABLE = {"response": "", "item": "item:", "sealed": "sealed:"}
_LOGGED_ID_CHARS = 128
_DAY = 86400.0


def open_store(settings: Settings) -> ResponseStore:
    """The store ``settings`` describe (not opened: that happens on first use, in the process that uses it)."""
    return ResponseStore(
        state_directory(settings.state_dir), max_entries=settings.stored_responses_max,
        max_age=settings.stored_responses_days * _DAY,
    )


class StoredContent:
    """Applies ``--stored-content`` to one instance's requests; ``configure`` swaps the mode on reload."""

    def __init__(self, settings: Settings, store: ResponseStore, recorder: Recorder) -> None:
        self.store = store
        self.recorder = recorder
        self.mode = settings.stored_content
        self.configure(settings)

    def configure(self, settings: Settings) -> None:
        """The reloadable settings: the mode, the store's bounds (the state directory needs a restart)."""
        self.mode = settings.stored_content
        self.store.max_entries = settings.stored_responses_max
        self.store.max_age = settings.stored_responses_days * _DAY

    async def admit(self, exchange: Exchange, references: list[StoredReference]) -> None:
        """Let ``references`` go, or raise the 403 that names the first one the mode does not admit."""
        mode = self.mode
        if mode == "allow":
            for reference in references:
                log.warning("stored content referenced, NOT checked (--stored-content allow) %s", _describe(exchange, reference))
                self.recorder.stored_content(exchange, reference, "allowed")
            return
        for reference in references:
            if mode == "refuse" or reference.kind not in CHECKABLE or not await self._delivered(exchange, reference):
                log.info("stored content refused (--stored-content %s) %s", mode, _describe(exchange, reference))
                self.recorder.stored_content(exchange, reference, "refused")
                raise stored_content_refused(reference.field, mode)
        for reference in references:
            self.recorder.stored_content(exchange, reference, "admitted")

    def keeps(self, dialect: Dialect, body: dict[str, Any]) -> bool:
        """Whether the reply to this request is to be recorded when it is delivered whole."""
        return self.mode == "checked" and dialect.stores_reply(body)

    async def delivered(self, exchange: Exchange, response_id: str, items: Iterable[StoredItem] = ()) -> None:
        """A reply went to the client whole and unblocked: its id, and its items', become usable for this tenant."""
        try:
            await self.store.record(exchange.tenant_id, response_id, *map(_key, items))
        except (OSError, sqlite3.Error):
            log.exception("could not record a delivered reply request_id=%s tenant_id=%s (its follow-ups will be "
                          "refused)", exchange.request_id, exchange.tenant_id)

    async def withdrawn(self, exchange: Exchange, response_id: str, items: Iterable[StoredItem] = ()) -> None:
        """A stored reply was blocked or cut: its id, and its items' (when the stream got to state them),
        must never be admitted."""
        try:
            await self.store.withdraw(exchange.tenant_id, response_id, *map(_key, items))
        except (OSError, sqlite3.Error):
            log.exception("could not withdraw a cut reply request_id=%s tenant_id=%s", exchange.request_id,
                          exchange.tenant_id)

    def stream(self, exchange: Exchange) -> StoredReply:
        return StoredReply(self, exchange)

    async def _delivered(self, exchange: Exchange, reference: StoredReference) -> bool:
        try:
            return await self.store.usable(exchange.tenant_id, CHECKABLE[reference.kind] + reference.id) is True
        except (OSError, sqlite3.Error):
            log.exception("could not read the record of delivered replies request_id=%s", exchange.request_id)
            raise stored_content_unavailable() from None


class StoredReply:
    """One streamed reply the provider stores: its id as the stream states it, recorded once delivered."""

    __slots__ = ("stored", "exchange", "id", "items", "recorded")

    def __init__(self, stored: StoredContent, exchange: Exchange) -> None:
        self.stored = stored
        self.exchange = exchange
        self.id = ""
        self.items: tuple[StoredItem, ...] = ()  # what else the completing event states it delivers
        self.recorded = False

    async def delivered(self) -> None:
        if self.id and not self.recorded:
            self.recorded = True
            await self.stored.delivered(self.exchange, self.id, self.items)

    async def cut(self) -> None:
        if self.id:
            await self.stored.withdrawn(self.exchange, self.id, self.items)


def _key(item: StoredItem) -> str:
    """The key a delivered item is recorded under (beside reply ids, in the same store)."""
    return CHECKABLE[item.kind] + item.id


def _describe(exchange: Exchange, reference: StoredReference) -> str:
    return (
        f"request_id={exchange.request_id} tenant_id={exchange.tenant_id} field={escape_controls(reference.field)} "
        f"kind={reference.kind} id={escape_controls(reference.id[:_LOGGED_ID_CHARS]) or '-'}"
    )
