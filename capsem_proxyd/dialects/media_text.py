"""Inline media whose type is text is text the model reads: decoded, it goes to the text hooks too.

A ``data:text/plain,...`` URL as an image, a base64 CSV as a file, a JSON
document as Gemini ``inlineData``: providers hand such media to the model as
text, so a check that saw only media (which text policies never read) let
any text through. Each such item stays media, and its text joins the texts
of the hook that reads the part around it (the prompt, the system
instructions, or the tool result that carries it), in place.

Decoding follows the stricter reading: the media type's charset (UTF-8 when
it names none; a byte-order mark wins, as decoders do); bytes that do not
decode under it are decoded anyway, each bad byte a replacement character,
and a declared charset other than UTF-8 is read as UTF-8 too when that reads
differently (a provider may ignore the declaration). Media of no stated type
(``application/octet-stream``, empty) whose bytes are UTF-8 text is read as
text as well. A PDF's text needs a parser: it becomes a ``Document``,
extracted off the event loop before the hooks run (``enforcement/documents.py``).
Nothing here does I/O.
"""

from __future__ import annotations

import codecs
from typing import NamedTuple

from capsem_proxyd.views import Document, MediaPart, RequestView

# application/<subtype> that is text (besides every +json, +xml and +yaml suffix).
_TEXT_APPLICATIONS = frozenset({
    "json", "xml", "yaml", "x-yaml", "csv", "x-csv", "tsv", "markdown", "x-markdown", "javascript",
    "x-javascript", "ecmascript", "typescript", "x-typescript", "x-sh", "x-shellscript", "x-csh", "sql", "toml",
    "x-toml", "x-python", "x-python-code", "x-httpd-php", "x-php", "x-perl", "x-ruby", "x-tex", "x-latex",
    "rtf", "x-rtf", "ndjson", "x-ndjson", "jsonl", "x-jsonlines", "jsonlines", "graphql", "x-www-form-urlencoded",
    "x-ipynb+json", "ld+json", "xhtml+xml", "x-subrip", "x-troff", "postscript", "x-empty", "sgml", "dtd",
    "x-java-source", "x-c", "x-c++", "x-go", "x-rust", "x-kotlin", "x-scala", "x-swift", "x-lua", "x-r",
    "x-powershell", "x-bat", "x-msdos-program", "x-properties", "x-ini", "x-config", "x-diff", "x-patch",
    "mbox", "vnd.api+json", "x-ndjson+json", "edn", "hjson", "json5", "x-json5", "x-hcl", "hcl",
})
_UNTYPED = frozenset({"", "application/octet-stream", "application/unknown", "binary/octet-stream"})
_PDF = frozenset({"application/pdf", "application/x-pdf", "application/acrobat", "text/pdf"})
_BOMS = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
         (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


def essence(mime_type: str) -> tuple[str, str]:
    """A media type's ``type/subtype`` (lower case) and the charset its parameters name ("" if none)."""
    kind, _, parameters = mime_type.partition(";")
    charset = ""
    for parameter in parameters.split(";"):
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset":
            charset = value.strip().strip('"').strip()
    return kind.strip().lower(), charset


def is_text_type(kind: str) -> bool:
    """Whether media of type ``kind`` (``type/subtype``) is text a model reads as such."""
    top, _, subtype = kind.partition("/")
    if top == "text":
        return kind not in _PDF
    if top == "message":  # message/rfc822, message/partial...: mail as text
        return True
    if top != "application":
        return subtype.endswith(("+json", "+xml", "+yaml"))  # image/svg+xml is text, too
    return subtype in _TEXT_APPLICATIONS or subtype.endswith(("+json", "+xml", "+yaml"))


def is_pdf(media: MediaPart) -> bool:
    return essence(media.mime_type)[0] in _PDF


def readings(media: MediaPart) -> list[str]:
    """The texts a model may read in ``media`` (none: it is not text)."""
    kind, named = essence(media.mime_type)
    data = media.data
    charset = media.charset or named
    if not is_text_type(kind):
        if kind in _UNTYPED:
            try:
                return [data.decode("utf-8")]  # no type stated, and the bytes are text: read as text
            except UnicodeDecodeError:
                return []
        return []
    return _decoded(data, charset)


def _decoded(data: bytes, charset: str) -> list[str]:
    """``data`` read under ``charset`` (UTF-8 if none or not a charset, a byte-order mark first), and as UTF-8
    when a declared other charset reads it differently."""
    codec = _codec(charset)
    for bom, name in _BOMS:
        if data.startswith(bom):
            codec = name
            break
    utf8 = data.decode("utf-8", errors="replace") if codec in ("utf-8", "utf-8-sig") else None
    if utf8 is not None:
        return [data.decode(codec, errors="replace")] if codec == "utf-8-sig" else [utf8]
    try:
        text = data.decode(codec, errors="replace")
    except Exception:  # noqa: BLE001 - a codec that fails on some input: UTF-8 is the reading left
        return [data.decode("utf-8", errors="replace")]
    utf8 = data.decode("utf-8", errors="replace")
    return [text] if utf8 == text else [text, utf8]


# Codecs Python has that are no charset of a text (host names; punycode's decoding is quadratic, a cost a
# client would choose): a client naming one gets UTF-8.
_NOT_CHARSETS = frozenset({"idna", "punycode", "undefined"})


def _codec(charset: str) -> str:
    if not charset:
        return "utf-8"
    try:
        info = codecs.lookup(charset)
    except (LookupError, ValueError, TypeError):
        return "utf-8"  # a charset Python does not know: read as UTF-8, the stricter guess
    if info.name in _NOT_CHARSETS:
        return "utf-8"
    try:
        "".encode(info.name)  # str.encode refuses the codecs of bytes (base64, zlib, rot13...): no charsets
    except LookupError:
        return "utf-8"
    return info.name


class Inline(NamedTuple):
    """Where a request's inline media goes: ``view.media``, and its text to ``reader`` (``Document.reader``)."""

    view: RequestView
    reader: str | int

    def take(self, media: MediaPart, sink: list[str]) -> None:
        """``media`` into the view; its text, when its type is text, into ``sink`` (the texts of the hook
        that reads the part); a PDF to the documents whose text is extracted before the hooks run."""
        self.view.media.append(media)
        texts = readings(media)
        if texts:
            sink.extend(texts)
        elif is_pdf(media):
            self.view.documents.append(Document(media, self.reader))


def tool_reader(view: RequestView) -> int:
    """The reader of media inside the tool result being read: the result appended next."""
    return len(view.tool_results)
