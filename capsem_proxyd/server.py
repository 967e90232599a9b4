"""Serve the app with Hypercorn's trio worker until SIGINT/SIGTERM."""

from __future__ import annotations

import logging
import signal
from functools import partial

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

from capsem_proxyd import __version__
from capsem_proxyd.app import create_app, proxy_state
from capsem_proxyd.config import Settings
from capsem_proxyd.policy_engine import PolicyEngine

log = logging.getLogger("capsem_proxyd")


def hypercorn_config(settings: Settings) -> HypercornConfig:
    config = HypercornConfig()
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    config.bind = [f"{host}:{settings.port}"]
    config.accesslog = None  # our own request line replaces it (it would print ?key=)
    config.errorlog = logging.getLogger("hypercorn.error")
    config.graceful_timeout = settings.graceful_timeout
    config.include_server_header = False
    config.keep_alive_timeout = 75
    return config


async def _wait_for_signal() -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            log.info("received %s, shutting down", signal.Signals(signum).name)
            return


async def serve(
    settings: Settings,
    engine: PolicyEngine | None = None,
    *,
    handle_signals: bool = True,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until SIGINT/SIGTERM (or cancellation); reports the bound URLs via ``task_status``."""
    app = create_app(settings, engine)
    config = hypercorn_config(settings)
    state = proxy_state(app)
    trigger = _wait_for_signal if handle_signals else None
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(partial(hypercorn_serve, app, config, shutdown_trigger=trigger))
        for warning in state.engine.policy_set.warnings:
            log.warning("%s", warning)
        policies = ", ".join(state.engine.names) or "NONE (requests are forwarded unchecked)"
        log.info(
            "capsem-proxyd %s listening on %s | upstreams: openai=%s gemini=%s anthropic=%s | policies: %s [%s]",
            __version__, ", ".join(binds), settings.openai_upstream, settings.gemini_upstream,
            settings.anthropic_upstream, policies, state.engine.policy_set.source,
        )
        task_status.started(binds)
