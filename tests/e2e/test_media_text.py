"""Media the model reads as text is checked as text (issue 20, class 8), through the real proxy.

A ``data:text/plain,capsem_block`` image, a base64 CSV file, a JSON
``inlineData``, a text document in a tool result: each is decoded with its
charset and given to the text hooks, besides staying media. A PDF's text is
extracted in a worker process and checked the same way; a PDF beyond the
limits is media only. The default policy is Debug, which blocks the marker in
text and never reads media.
"""

from __future__ import annotations

import base64
import codecs
import encodings.aliases
import mimetypes
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anthropic
import httpx
import openai
import pytest
import trio
from google.genai import types
from hypothesis import given
from hypothesis import strategies as st

from capsem_proxyd.config import Settings
from capsem_proxyd.dialects.media_text import essence, is_text_type, readings
from capsem_proxyd.enforcement import documents
from capsem_proxyd.enforcement.pdf_text import PdfLimits, pdf_text
from capsem_proxyd.views import MediaPart
from tests.support.bodies import USER, user
from tests.support.bodies import chat_body as chat
from tests.support.bodies import gemini_body as gemini
from tests.support.bodies import messages_body as anthropic_body
from tests.support.bodies import responses_body as responses
from tests.support.fake_upstream import FakeUpstream
from tests.support.policies import MediaRecorder
from tests.support.proxy import ANTHROPIC_AUTH, GEMINI_AUTH, OPENAI_AUTH, Proxy, in_thread

M = "capsem_block"
CHAT = ("/v1/chat/completions", OPENAI_AUTH)
RESPONSES = ("/v1/responses", OPENAI_AUTH)
ANTHROPIC = ("/v1/messages", ANTHROPIC_AUTH)
GEMINI = ("/v1beta/models/gemini-2.5-flash:generateContent", GEMINI_AUTH)
GEMINI_COUNT = ("/v1beta/models/gemini-2.5-flash:countTokens", GEMINI_AUTH)


def b64(data: bytes | str) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def minimal_pdf(*pages: str, title: str = "") -> bytes:
    """A valid PDF, one page per text (one Helvetica text object each), its cross-reference offsets exact."""
    kids = " ".join(f"{4 + 2 * number} 0 R" for number in range(len(pages)))
    objects: list[bytes] = [b"<< /Type /Catalog /Pages 2 0 R >>",
                            f"<< /Type /Pages /Kids [{kids}] /Count {len(pages)} >>".encode(),
                            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    for number, text in enumerate(pages):
        escaped = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
        stream = f"BT /F1 12 Tf 72 720 Td ({escaped}) Tj ET".encode("latin-1")
        objects.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {5 + 2 * number} 0 R "
                       "/Resources << /Font << /F1 3 0 R >> >> >>".encode())
        objects.append(f"<< /Length {len(stream)} >>\nstream\n".encode() + stream + b"\nendstream")
    if title:
        objects.append(f"<< /Title ({title}) >>".encode("latin-1"))
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{offset:010d} 00000 n \n".encode() for offset in offsets)
    info = f" /Info {len(objects)} 0 R" if title else ""
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R{info} >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def text_doc(text: str) -> dict[str, Any]:
    return {"type": "document", "source": {"type": "base64", "media_type": "text/plain", "data": b64(text)}}


def chat_tool(content: Any) -> dict[str, Any]:
    return chat(USER, {"role": "assistant", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "read", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": content})


def anthropic_tool(content: Any) -> dict[str, Any]:
    return {"model": "m", "max_tokens": 10, "messages": [
        USER, {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "read", "input": {}}]},
        user([{"type": "tool_result", "tool_use_id": "t1", "content": content}])]}


def gemini_tool(part: dict[str, Any]) -> dict[str, Any]:
    return {"contents": [{"role": "model", "parts": [{"functionCall": {"name": "read", "args": {}}}]},
                         {"role": "user", "parts": [{"functionResponse": {"name": "read", "response": {}, "parts": [part]}}]}]}


def responses_tool(output: Any) -> dict[str, Any]:
    return responses([{"type": "function_call", "call_id": "c1", "name": "read", "arguments": "{}"},
                      {"type": "function_call_output", "call_id": "c1", "output": output}])


TEXT_MEDIA: dict[str, tuple[tuple[str, Any], dict[str, Any]]] = {
    "chat image_url data:text/plain, percent-encoded": (CHAT, chat(user([
        {"type": "image_url", "image_url": {"url": f"data:text/plain,{M}"}}]))),
    "chat image_url data: with no type, escapes": (CHAT, chat(user([
        {"type": "image_url", "image_url": {"url": "data:,%63apsem%5Fblock"}}]))),
    "chat file_data data URL, base64 CSV": (CHAT, chat(user([
        {"type": "file", "file": {"filename": "t.csv", "file_data": f"data:text/csv;base64,{b64('a,' + M)}"}}]))),
    "chat file_data bare base64, a .md name": (CHAT, chat(user([
        {"type": "file", "file": {"filename": "notes.md", "file_data": b64(f"# {M}")}}]))),
    "chat file_data bare base64, no type": (CHAT, chat(user([
        {"type": "file", "file": {"filename": "notes", "file_data": b64(M)}}]))),
    "chat system message file": (CHAT, chat({"role": "system", "content": [
        {"type": "file", "file": {"file_data": f"data:application/json,%7B%22a%22:%22{M}%22%7D"}}]}, USER)),
    "chat tool message file": (CHAT, chat_tool([{"type": "file", "file": {"file_data": f"data:text/plain,{M}"}}])),
    "moderations image_url data:text/plain": (("/v1/moderations", OPENAI_AUTH), {"model": "omni-moderation-latest",
        "input": [{"type": "image_url", "image_url": {"url": f"data:text/plain,{M}"}}]}),
    "responses input_file data URL": (RESPONSES, responses([{"role": "user", "content": [
        {"type": "input_file", "filename": "a.txt", "file_data": f"data:text/plain;base64,{b64(M)}"}]}])),
    "responses input_image data:text/plain": (RESPONSES, responses([{"role": "user", "content": [
        {"type": "input_image", "image_url": f"data:text/plain,{M}"}]}])),
    "responses function_call_output input_file": (RESPONSES, responses_tool([
        {"type": "input_file", "filename": "a.xml", "file_data": b64(f"<a>{M}</a>")}])),
    "anthropic document text/plain base64": (ANTHROPIC, anthropic_body([text_doc(M)])),
    "anthropic document in a tool_result": (ANTHROPIC, anthropic_tool([text_doc(M)])),
    "anthropic image whose type is svg": (ANTHROPIC, anthropic_body([{"type": "image", "source": {
        "type": "base64", "media_type": "image/svg+xml", "data": b64(f"<svg><text>{M}</text></svg>")}}])),
    "anthropic system document": (ANTHROPIC, anthropic_body("hi", system=[text_doc(M)])),
    "anthropic document with a text source": (ANTHROPIC, anthropic_body([{"type": "document", "source": {
        "type": "text", "media_type": "text/plain", "data": f"plain {M}"}}])),
    "anthropic document with a content source": (ANTHROPIC, anthropic_body([{"type": "document", "source": {
        "type": "content", "content": [{"type": "text", "text": "caps"}, {"type": "text", "text": "em_block"}]}}])),
    "chat image_url as a bare string": (CHAT, chat(user([{"type": "image_url", "image_url": f"data:text/plain,{M}"}]))),
    "gemini inlineData application/json": (GEMINI, gemini({"inlineData": {
        "mimeType": "application/json", "data": b64(f'{{"a": "{M}"}}')}})),
    "gemini inlineData UTF-16 by its charset": (GEMINI, gemini({"inlineData": {
        "mimeType": "text/plain; charset=utf-16le", "data": b64(M.encode("utf-16-le"))}})),
    "gemini inlineData UTF-16 by its BOM": (GEMINI, gemini({"inline_data": {
        "mime_type": "text/markdown", "data": b64(codecs.BOM_UTF16_BE + M.encode("utf-16-be"))}})),
    "gemini systemInstruction inlineData": (GEMINI, gemini(systemInstruction={"parts": [
        {"inlineData": {"mimeType": "text/x-python", "data": b64(f"# {M}")}}]})),
    "gemini functionResponse parts": (GEMINI, gemini_tool({"inlineData": {"mimeType": "text/csv", "data": b64(M)}})),
    "gemini countTokens inlineData": (GEMINI_COUNT, {"contents": [{"parts": [
        {"inlineData": {"mimeType": "text/yaml", "data": b64(f"a: {M}")}}]}]}),
}


async def post(proxy: Proxy, route: tuple[str, Any], body: dict[str, Any]) -> httpx.Response:
    path, headers = route
    async with httpx.AsyncClient(base_url=proxy.url, timeout=60) as client:
        return await client.post(path, json=body, headers=headers)


@pytest.mark.parametrize("name", TEXT_MEDIA)
async def test_text_in_media_is_checked_as_text(name: str, proxy: Proxy, fake: FakeUpstream) -> None:
    route, body = TEXT_MEDIA[name]
    response = await post(proxy, route, body)
    assert response.status_code == 400, response.text
    assert "CAPSEM policy 'Debug'" in response.text
    assert fake.requests == []


@pytest.mark.parametrize("name", TEXT_MEDIA)
async def test_the_same_media_without_the_marker_goes(name: str, proxy: Proxy, fake: FakeUpstream) -> None:
    route, body = TEXT_MEDIA[name]
    clean = _without_marker(body)
    response = await post(proxy, route, clean)
    assert response.status_code == 200, response.text
    assert fake.requests[0].json == clean  # forwarded untouched


def _without_marker(value: Any) -> Any:
    """``value`` with the marker (plain, percent-escaped, base64 in any encoding) spelled ``capsem_fine``."""
    if isinstance(value, dict):
        return {key: _without_marker(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_without_marker(item) for item in value]
    if not isinstance(value, str):
        return value
    if value == "em_block":  # the second half of a split marker
        return "em_fine"
    value = value.replace(M, "capsem_fine").replace("%63apsem%5Fblock", "capsem_fine")
    head, comma, payload = value.rpartition(",") if value.startswith("data:") else ("", "", value)
    try:
        raw = base64.b64decode(payload, validate=True)
    except ValueError:
        return value
    for marker, fine in ((M.encode(), b"capsem_fine"), (M.encode("utf-16-le"), "capsem_fine".encode("utf-16-le")),
                         (M.encode("utf-16-be"), "capsem_fine".encode("utf-16-be"))):
        if marker in raw:
            return head + comma + b64(raw.replace(marker, fine))
    return value


# -- the official SDKs ---------------------------------------------------------------------------------------


async def test_openai_sdk_file_of_text(proxy: Proxy, fake: FakeUpstream) -> None:
    client = proxy.openai()
    content: Any = [{"type": "text", "text": "summarise"},
                    {"type": "file", "file": {"filename": "a.txt", "file_data": f"data:text/plain,{M}"}}]
    with pytest.raises(openai.BadRequestError, match="Debug"):
        await in_thread(lambda: client.chat.completions.create(model="gpt-4o", messages=[
            {"role": "user", "content": content}]))
    assert fake.requests == []


async def test_anthropic_sdk_text_document(proxy: Proxy, fake: FakeUpstream) -> None:
    client = proxy.anthropic()
    with pytest.raises(anthropic.BadRequestError, match="Debug"):
        await in_thread(lambda: client.messages.create(model="claude-sonnet-4-6", max_tokens=10, messages=[
            {"role": "user", "content": [text_doc(M), {"type": "text", "text": "summarise"}]}]))
    assert fake.requests == []


async def test_google_genai_text_and_pdf_parts(proxy: Proxy, fake: FakeUpstream) -> None:
    from google.genai import errors

    client = proxy.gemini()
    for part in (types.Part.from_bytes(data=f"a,{M}".encode(), mime_type="text/csv"),
                 types.Part.from_bytes(data=PDF_MARKED, mime_type="application/pdf")):
        with pytest.raises(errors.ClientError, match="Debug"):
            await in_thread(lambda part=part: client.models.generate_content(model="gemini-2.5-flash",
                                                                             contents=["read", part]))
    assert fake.requests == []


# -- every text type and encoding (a property, through the proxy) ------------------------------------------

TEXT_TYPES = ["text/plain", "text/csv", "text/markdown", "text/html", "text/x-python", "application/json",
              "application/xml", "application/x-yaml", "application/yaml", "application/ld+json",
              "application/vnd.api+json", "application/atom+xml", "application/javascript", "application/sql",
              "application/toml", "application/x-ndjson", "image/svg+xml", "message/rfc822", ""]
CHARSETS = ["", "utf-8", "UTF-8", "utf-16", "utf-16le", "utf-16be", "utf-32", "iso-8859-1", "windows-1252",
            "us-ascii", "no-such-charset"]


def _payload(text: str, charset: str) -> bytes:
    name = charset or "utf-8"
    try:
        return text.encode(codecs.lookup(name).name)
    except LookupError:
        return text.encode("utf-8")


@st.composite
def text_media(draw: st.DrawFn) -> tuple[str, str, bytes]:
    """(media type as sent, the way it is sent, the bytes): the marker inside some text."""
    kind = draw(st.sampled_from(TEXT_TYPES))
    charset = draw(st.sampled_from(CHARSETS))
    before = draw(st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=8))
    after = draw(st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=8))
    data = _payload(f"{before}{M}{after}", charset)
    mime = kind + (f";charset={charset}" if charset and kind else "")
    return mime, draw(st.sampled_from(["chat base64", "chat percent", "anthropic", "gemini", "responses"])), data


def _body(mime: str, how: str, data: bytes) -> tuple[tuple[str, Any], dict[str, Any]]:
    if how == "chat base64":
        return CHAT, chat(user([{"type": "image_url", "image_url": {"url": f"data:{mime};base64,{b64(data)}"}}]))
    if how == "chat percent":
        return CHAT, chat(user([{"type": "file", "file": {"file_data": f"data:{mime},{quote(data)}"}}]))
    if how == "anthropic":
        return ANTHROPIC, anthropic_body([{"type": "document", "source": {
            "type": "base64", "media_type": mime or "text/plain", "data": b64(data)}}])
    if how == "gemini":
        return GEMINI, gemini({"inlineData": {"mimeType": mime or "text/plain", "data": b64(data)}})
    return RESPONSES, responses([{"role": "user", "content": [{"type": "input_file", "file_data":
                                                                f"data:{mime};base64,{b64(data)}"}]}])


async def test_every_text_type_and_encoding_is_checked(proxy: Proxy, fake: FakeUpstream) -> None:
    with httpx.Client(base_url=proxy.url, timeout=60) as client:

        @given(text_media())
        def refused(case: tuple[str, str, bytes]) -> None:
            mime, how, data = case
            (path, headers), body = _body(mime, how, data)
            response = client.post(path, json=body, headers=dict(headers))
            assert response.status_code == 400, (case, response.text)

        await trio.to_thread.run_sync(refused)
    assert fake.requests == []


@pytest.mark.parametrize("mime", ["text/plain", "application/json", "text/csv"])
async def test_undecodable_text_is_read_with_replacements(mime: str, proxy: Proxy, fake: FakeUpstream) -> None:
    data = b"\xff\xfe\xfd " + M.encode() + b" \xc3\x28"  # not UTF-8; the marker still reads through
    response = await post(proxy, GEMINI, gemini({"inlineData": {"mimeType": mime, "data": b64(data)}}))
    assert response.status_code == 400, response.text


@pytest.mark.parametrize("charset", ["base64", "zlib", "rot13", "hex", "idna", "punycode", "undefined", "bad\\0name",
                                     "utf-7", "unicode_escape"])
async def test_a_charset_that_is_no_text_encoding_reads_as_utf8(charset: str, proxy: Proxy, fake: FakeUpstream) -> None:
    """Python's codecs of bytes (base64, zlib...) and host names are no charsets: UTF-8 then, never a 500."""
    data = b"\xff " + M.encode()
    response = await post(proxy, GEMINI, gemini({"inlineData": {"mimeType": f"text/plain; charset={charset}",
                                                                "data": b64(data)}}))
    assert response.status_code == 400, response.text


@pytest.mark.parametrize("where", ["response", "pdf"])
@pytest.mark.parametrize("marked", ["contents", "generateContentRequest"])
async def test_count_tokens_keeps_the_tool_results_and_documents_of_both_its_contents(
    marked: str, where: str, proxy: Proxy, fake: FakeUpstream
) -> None:
    """countTokens takes ``contents`` and a whole ``generateContentRequest``: the tool results of the one read
    first were replaced by the other's, and the inner request's PDFs must not be lost either."""
    def tool_turn(marked: bool) -> list[dict[str, Any]]:
        pdf = minimal_pdf(M if marked and where == "pdf" else "fine")
        note = M if marked and where == "response" else "see file"
        return [{"role": "model", "parts": [{"functionCall": {"name": "read", "args": {}}}]},
                {"role": "user", "parts": [{"functionResponse": {"name": "read", "response": {"note": note},
                                                                 "parts": [{"inlineData": {"mimeType": "application/pdf",
                                                                                           "data": b64(pdf)}}]}}]}]

    body = {"contents": tool_turn(marked == "contents"),
            "generateContentRequest": {"model": "models/gemini-2.5-flash",
                                       "contents": tool_turn(marked != "contents")}}
    response = await post(proxy, GEMINI_COUNT, body)
    assert response.status_code == 400, response.text
    assert "response of tool 'read'" in response.text


CODEC_NAMES = sorted(set(encodings.aliases.aliases) | set(encodings.aliases.aliases.values()))


@given(st.binary(max_size=64), st.sampled_from(TEXT_TYPES) | st.text(max_size=30),
       st.sampled_from(CODEC_NAMES) | st.text(max_size=20))
def test_reading_media_never_raises(data: bytes, mime: str, charset: str) -> None:
    """Any bytes, any type, any charset a client names (every codec Python has among them): texts or none."""
    texts = readings(MediaPart(data, mime, charset))
    assert all(isinstance(text, str) for text in texts)
    if is_text_type(essence(mime)[0]):
        assert texts


async def test_images_are_not_read_as_text(proxy: Proxy, fake: FakeUpstream) -> None:
    data = b"\x89PNG\r\n\x1a\n" + M.encode()
    response = await post(proxy, GEMINI, gemini({"inlineData": {"mimeType": "image/png", "data": b64(data)}}))
    assert response.status_code == 200, response.text  # media: for media policies, as before


# -- text media stays media, its text is in the prompt where the part was -----------------------------------


@pytest.fixture
async def media_proxy(start_proxy: Callable[..., Any], proxy_settings: Settings, tmp_path: Path) -> Proxy:
    (tmp_path / "media.toml").write_text('class = "tests.support.policies:MediaRecorder"\n')
    MediaRecorder.seen.clear()
    MediaRecorder.prompts.clear()
    return await start_proxy(proxy_settings, policy_dir=str(tmp_path))


async def test_text_media_is_media_and_text(media_proxy: Proxy, fake: FakeUpstream) -> None:
    body = chat(user([{"type": "text", "text": "read this:"},
                      {"type": "file", "file": {"filename": "a.txt", "file_data": b64("the file's words")}},
                      {"type": "text", "text": "thanks"}]))
    assert (await post(media_proxy, CHAT, body)).status_code == 200
    assert MediaRecorder.seen == [("text/plain", b"the file's words")]
    assert MediaRecorder.prompts == ["read this:\nthe file's words\na.txt\nthanks"]  # in place, name after


# -- PDF documents --------------------------------------------------------------------------------------------

PDF_MARKED = minimal_pdf("quarterly numbers", f"page two says {M}")
PDF_CLEAN = minimal_pdf("quarterly numbers", "page two says nothing", title="The Report")


def pdf_bodies(pdf: bytes) -> dict[str, tuple[tuple[str, Any], dict[str, Any]]]:
    url = f"data:application/pdf;base64,{b64(pdf)}"
    return {
        "chat file": (CHAT, chat(user([{"type": "file", "file": {"filename": "r.pdf", "file_data": url}}]))),
        "chat file, bare base64 and a .pdf name": (CHAT, chat(user([
            {"type": "file", "file": {"filename": "r.pdf", "file_data": b64(pdf)}}]))),
        "responses input_file in a tool output": (RESPONSES, responses_tool([
            {"type": "input_file", "filename": "r.pdf", "file_data": url}])),
        "anthropic document": (ANTHROPIC, anthropic_body([{"type": "document", "source": {
            "type": "base64", "media_type": "application/pdf", "data": b64(pdf)}}])),
        "anthropic document in a tool_result": (ANTHROPIC, anthropic_tool([{"type": "document", "source": {
            "type": "base64", "media_type": "application/pdf", "data": b64(pdf)}}])),
        "gemini inlineData": (GEMINI, gemini({"inlineData": {"mimeType": "application/pdf", "data": b64(pdf)}})),
        "gemini systemInstruction": (GEMINI, gemini(systemInstruction={"parts": [
            {"inlineData": {"mimeType": "application/pdf", "data": b64(pdf)}}]})),
    }


@pytest.mark.parametrize("name", pdf_bodies(PDF_MARKED))
async def test_the_text_of_a_pdf_is_checked(name: str, proxy: Proxy, fake: FakeUpstream) -> None:
    route, body = pdf_bodies(PDF_MARKED)[name]
    response = await post(proxy, route, body)
    assert response.status_code == 400, response.text
    assert fake.requests == []
    route, body = pdf_bodies(PDF_CLEAN)[name]
    assert (await post(proxy, route, body)).status_code == 200


async def test_a_pdfs_text_joins_the_prompt(media_proxy: Proxy, fake: FakeUpstream) -> None:
    route, body = pdf_bodies(PDF_CLEAN)["anthropic document"]
    assert (await post(media_proxy, route, body)).status_code == 200
    assert MediaRecorder.seen == [("application/pdf", PDF_CLEAN)]
    (prompt,) = MediaRecorder.prompts
    assert "quarterly numbers\npage two says nothing\nThe Report" in prompt


async def test_a_pdf_beyond_the_limits_is_media_only(
    media_proxy: Proxy, fake: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(documents, "LIMITS", PdfLimits(max_pages=1))
    route, body = pdf_bodies(PDF_CLEAN)["gemini inlineData"]
    assert (await post(media_proxy, route, body)).status_code == 200
    assert MediaRecorder.seen == [("application/pdf", PDF_CLEAN)]
    assert "quarterly" not in MediaRecorder.prompts[0]


async def test_a_pdf_the_parser_cannot_read_is_media_only(media_proxy: Proxy, fake: FakeUpstream) -> None:
    broken = b"%PDF-1.4\n" + b"this is no PDF structure at all " * 4
    route, body = pdf_bodies(broken)["anthropic document"]
    assert (await post(media_proxy, route, body)).status_code == 200
    assert MediaRecorder.seen == [("application/pdf", broken)]


def test_limits_of_the_extraction() -> None:
    pdf = minimal_pdf(*(f"page {number} holds a line of words" for number in range(300)))
    assert pdf_text(pdf, PdfLimits()) is not None
    assert pdf_text(pdf, PdfLimits(max_pages=299)) is None
    assert pdf_text(pdf, PdfLimits(max_bytes=len(pdf) - 1)) is None
    assert pdf_text(pdf, PdfLimits(max_chars=100)) is None
    # CPU time, not the wall clock: 300 pages take far more than a millisecond of it anywhere.
    assert pdf_text(pdf, PdfLimits(cpu_seconds=0.001)) is None
    assert pdf_text(minimal_pdf("ok"), PdfLimits()) == "ok"  # the timer was disarmed and its handler restored


async def test_an_extraction_is_remembered_per_tenant() -> None:
    """An agent resends its documents every turn: parsed once per tenant (no CPU charged the second time),
    each tenant its own entry."""
    pdf = minimal_pdf("remembered text")
    before = set(documents._extracted)
    text, used = await documents.document_text(pdf, "tenant-a", PdfLimits())
    assert text == "remembered text" and used >= 0  # a warm worker may parse it within one clock tick
    (key,) = set(documents._extracted) - before
    assert await documents.document_text(pdf, "tenant-a", PdfLimits()) == ("remembered text", 0.0)
    assert set(documents._extracted) - before == {key}
    assert (await documents.document_text(pdf, "tenant-b", PdfLimits()))[0] == "remembered text"
    assert len(set(documents._extracted) - before) == 2


async def test_one_requests_documents_share_a_cpu_budget(
    media_proxy: Proxy, fake: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the request's budget the documents left are media only (no budget at all here: none is read)."""
    monkeypatch.setattr(documents, "REQUEST_CPU_SECONDS", 0.0)
    route, body = pdf_bodies(minimal_pdf("budgeted words"))["anthropic document"]
    assert (await post(media_proxy, route, body)).status_code == 200
    assert "budgeted words" not in MediaRecorder.prompts[0]
    monkeypatch.setattr(documents, "REQUEST_CPU_SECONDS", 30.0)
    assert (await post(media_proxy, route, body)).status_code == 200
    assert "budgeted words" in MediaRecorder.prompts[1]


def test_mimetypes_knows_the_names_used_here() -> None:
    assert mimetypes.guess_type("notes.md")[0] == "text/markdown"
