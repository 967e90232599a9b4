"""Helpers shared by the hardening tests: one SDK call per provider, and the error each raises.

Every hardening guarantee is checked through the official SDKs where a client
would meet it, so "provider-shaped" means: the SDK raises its own typed
exception with the right status, and the message is ours.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from google.genai import errors as genai_errors
from google.genai import types as genai_types

from tests.support.proxy import Proxy, in_thread

PROVIDERS = ("openai", "anthropic", "gemini")
GEMINI_MODEL = "gemini-2.5-flash"


def sdk_call(
    provider: str,
    proxy: Proxy,
    *,
    prompt: str = "hi",
    extra_body: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    stream: bool = False,
) -> str:
    """One generation call through ``proxy`` with the provider's own SDK; returns the text.

    The client is closed before returning (or raising), so its connection to the proxy is gone.
    """
    if provider == "openai":
        with proxy.openai(default_headers=headers or {}) as client:
            kwargs: dict[str, Any] = {"extra_body": extra_body} if extra_body else {}
            messages = [{"role": "user", "content": prompt}]
            if stream:
                chunks = client.chat.completions.create(model="gpt-4o-mini", messages=messages, stream=True, **kwargs)
                return "".join(choice.delta.content or "" for chunk in chunks for choice in chunk.choices)
            return client.chat.completions.create(model="gpt-4o-mini", messages=messages, **kwargs).choices[0].message.content
    if provider == "anthropic":
        with proxy.anthropic(default_headers=headers or {}) as client:
            kwargs = {"extra_body": extra_body} if extra_body else {}
            messages = [{"role": "user", "content": prompt}]
            if stream:
                with client.messages.stream(model="claude-sonnet-4-6", max_tokens=50, messages=messages, **kwargs) as events:
                    return "".join(events.text_stream)
            reply = client.messages.create(model="claude-sonnet-4-6", max_tokens=50, messages=messages, **kwargs)
            return "".join(block.text for block in reply.content if block.type == "text")
    options = genai_types.HttpOptions(headers=headers or None, extra_body=extra_body or None)
    with proxy.gemini() as client:
        config = genai_types.GenerateContentConfig(http_options=options)
        if stream:
            pieces = client.models.generate_content_stream(model=GEMINI_MODEL, contents=prompt, config=config)
            return "".join(piece.text or "" for piece in pieces)
        return client.models.generate_content(model=GEMINI_MODEL, contents=prompt, config=config).text


def chat(proxy: Proxy, messages: str | list[dict[str, Any]], model: str = "gpt-4o-mini", **kwargs: Any) -> Any:
    """One OpenAI Chat Completions call through ``proxy`` (a string is one user turn). Blocking: run it
    with ``in_thread``."""
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    return proxy.openai().chat.completions.create(model=model, messages=messages, **kwargs)


async def sdk_error(provider: str, proxy: Proxy, **kwargs: Any) -> BaseException:
    """The exception ``provider``'s SDK raises for ``sdk_call(provider, proxy, **kwargs)``; fails if the
    call succeeds."""
    try:
        await in_thread(lambda: sdk_call(provider, proxy, **kwargs))
    except sdk_errors(provider) as error:
        return error
    raise AssertionError(f"the {provider} call did not fail")


async def refused(call: Callable[[], Any]) -> openai.BadRequestError:
    """The 400 the OpenAI SDK raises for the blocking ``call`` (its ``.body`` is the error object)."""
    with pytest.raises(openai.BadRequestError) as caught:
        await in_thread(call)
    assert caught.value.status_code == 400
    return caught.value


def status_of(error: BaseException) -> int:
    """The HTTP status an SDK exception carries."""
    if isinstance(error, genai_errors.APIError):
        return int(error.code)
    return int(error.status_code)


def sdk_errors(provider: str) -> tuple[type[BaseException], ...]:
    return {
        "openai": (openai.APIError,),
        "anthropic": (anthropic.APIError,),
        "gemini": (genai_errors.APIError,),
    }[provider]


def expected_error(provider: str, status: int) -> type[BaseException]:
    """The exception class each SDK raises for ``status`` (what an application catches)."""
    if provider == "gemini":
        return genai_errors.ClientError if status < 500 else genai_errors.ServerError
    table: dict[str, dict[int, type[BaseException]]] = {
        "openai": {400: openai.BadRequestError, 403: openai.PermissionDeniedError, 413: openai.APIStatusError,
                   431: openai.APIStatusError, 502: openai.InternalServerError, 504: openai.InternalServerError},
        "anthropic": {400: anthropic.BadRequestError, 403: anthropic.PermissionDeniedError,
                      413: anthropic.ContentTooLargeError, 431: anthropic.RequestHeaderFieldsTooLargeError,
                      502: anthropic.InternalServerError, 504: anthropic.GatewayTimeoutError},
    }
    return table[provider][status]


def message_of(error: BaseException) -> str:
    return str(getattr(error, "message", None) or error)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def proc_fd_targets() -> list[str]:
    """What each of this process's file descriptors points at (sockets as ``socket:[inode]``)."""
    targets = []
    for name in os.listdir("/proc/self/fd"):
        try:
            targets.append(os.readlink(f"/proc/self/fd/{name}"))
        except OSError:
            pass
    return targets


def socket_details() -> dict[str, str]:
    """This process's sockets: inode -> "local port -> remote port (state)" (TCP, UDP), to name a leak."""
    states = {"01": "ESTABLISHED", "06": "TIME_WAIT", "08": "CLOSE_WAIT", "0A": "LISTEN", "07": "CLOSE", "04": "FIN_WAIT1",
              "05": "FIN_WAIT2", "09": "LAST_ACK", "0B": "CLOSING"}
    table: dict[str, str] = {}
    for name in ("/proc/net/tcp", "/proc/net/tcp6", "/proc/net/udp", "/proc/net/udp6"):
        try:
            lines = Path(name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
            kind = "udp " if "udp" in name else ""
            table[inode] = f"{kind}{int(local.split(':')[1], 16)} -> {int(remote.split(':')[1], 16)} ({states.get(state, state)})"
    for name in ("unix", "netlink", "raw", "raw6", "packet"):
        try:
            lines = Path(f"/proc/net/{name}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if name == "unix" and len(fields) >= 7:
                table[fields[6]] = f"unix {fields[7] if len(fields) > 7 else '(unnamed)'}"
            elif name == "netlink" and len(fields) >= 10:
                table[fields[-1]] = f"netlink protocol {fields[1]} pid {fields[2]}"
            elif len(fields) >= 10:
                table[fields[9]] = name
    mine = {}
    for target in proc_fd_targets():
        if target.startswith("socket:["):
            inode = target[8:-1]
            mine[inode] = table.get(inode, "unknown socket")
    return mine


def raw_exchange(url: str, data: bytes, *, timeout: float = 5.0, read_all: bool = True) -> bytes:
    """Send raw bytes to the proxy and read until it closes the connection (or ``timeout``)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    received = bytearray()
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(data)
        try:
            while read_all or not received:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    return bytes(received)


def write_policy_folder(folder: Path, **files: str) -> Path:
    """A policy folder holding ``<name>.toml`` files with the given contents."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / f"{name}.toml").write_text(text)
    return folder


async def policy_proxy(start_proxy: Callable[..., Any], settings: Any, folder: Path, **files: str) -> Proxy:
    """A proxy (from the ``start_proxy`` fixture) running the policy files given as ``name=toml_text``
    (``rules=RULES`` writes ``rules.toml``) from ``folder``."""
    return await start_proxy(settings, policy_dir=str(write_policy_folder(folder, **files)))


def conversation_turn(api: str, stream: bool, proxy: Any, conversation: Any) -> None:
    """One turn of a conversation through ``api``'s official SDK (``chat``, ``responses``, ``anthropic``,
    ``gemini``), JSON or streamed to its end, a fresh client each time; raises the SDK's error if refused.
    ``conversation`` is what that API takes: Chat messages, Responses input, Anthropic messages, Gemini
    contents. Blocking: run it in a thread."""
    if api == "chat":
        reply = proxy.openai().chat.completions.create(model="gpt-4o-mini", messages=conversation, stream=stream)
        if stream:
            list(reply)
    elif api == "responses":
        reply = proxy.openai().responses.create(model="gpt-4o-mini", input=conversation, stream=stream)
        if stream:
            list(reply)
    elif api == "anthropic":
        client = proxy.anthropic()
        if stream:
            with client.messages.stream(model="claude-haiku-4-5", max_tokens=64, messages=conversation) as events:
                events.get_final_message()
        else:
            client.messages.create(model="claude-haiku-4-5", max_tokens=64, messages=conversation)
    else:
        client = proxy.gemini()
        if stream:
            list(client.models.generate_content_stream(model="gemini-2.5-flash", contents=conversation))
        else:
            client.models.generate_content(model="gemini-2.5-flash", contents=conversation)
