"""A fake LLM provider (OpenAI, Gemini, Anthropic wire formats) for the test suite.

See `server.py` for the HTTP side and `script.Reply` for what can be scripted.
"""

from .script import DEFAULT_TEXT, FAULTS, Reply, ToolCall
from .server import FakeUpstream, run_fake_upstream
from .wire import RecordedRequest, StreamRecord

__all__ = [
    "DEFAULT_TEXT",
    "FAULTS",
    "FakeUpstream",
    "RecordedRequest",
    "Reply",
    "StreamRecord",
    "ToolCall",
    "run_fake_upstream",
]
