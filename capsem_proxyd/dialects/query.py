"""What an API reads besides its body: the query string, and where it looks for a key.

The query string goes upstream as the client sent it, so it is read the way the
body is, deny-by-default. An API declares each parameter it knows with the
shape of its value (``QueryParams``: an enum, a flag, a date, a field mask),
as its body declares what is not content. Every other parameter, and a known
one whose value is outside its shape, is content: ``name=value`` joins the
prompt the policies check (``on_model_call``), one line per parameter. The
parameters that carry a key are never content: a key picks the tenant and
stays out of policies and audit records.

A key picks the tenant, and with it the policy profile and the allow-list
entry, so it must be the key the provider authenticates with. ``KeyCarriers``
names every place a provider reads a credential from (headers, query
parameters): a request whose carriers hold two different keys, or that gives
one carrier twice, could be checked as one tenant and served as another, and
is refused (``key_problem``). The same key in two places has one reading.

``QueryMap`` reads the query string once, as the provider does: UTF-8, percent
escapes and ``+`` decoded, pairs split on ``&``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from capsem_proxyd.dialects.content import Enum, Shape
from capsem_proxyd.errors import ErrorCode, ProxyError, bad_request


class QueryMap(Mapping[str, str]):
    """The query parameters as the provider reads them.

    As a mapping: the first value of each name (as werkzeug's ``MultiDict.get``).
    ``pairs``: every parameter in order; ``repeated``: the names given more than
    once; ``undecodable``: the query is not UTF-8 (then read as Latin-1, only so
    that the refusal can take the right provider's shape).
    """

    __slots__ = ("_values", "pairs", "repeated", "undecodable")

    def __init__(self, query_string: bytes = b"") -> None:
        self._values: dict[str, str] = {}
        self.pairs: list[tuple[str, str]] = []
        self.repeated: set[str] = set()
        self.undecodable = False
        if not query_string:
            return
        try:
            self.pairs = parse_qsl(query_string.decode("utf-8"), keep_blank_values=True, errors="strict")
        except UnicodeDecodeError:
            self.undecodable = True
            self.pairs = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True, encoding="latin-1")
        for name, value in self.pairs:
            if name in self._values:
                self.repeated.add(name)
            else:
                self._values[name] = value

    def __getitem__(self, name: str) -> str:
        return self._values[name]

    def __contains__(self, name: object) -> bool:
        return name in self._values

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


@dataclass(frozen=True, slots=True)
class QueryParams:
    """The query parameters an API knows: each name with the shape its value must fully match
    to be no content, and the names that carry a key (never content)."""

    shapes: Mapping[str, Shape] = field(default_factory=dict)
    keys: tuple[str, ...] = ()

    def content(self, pairs: Iterable[tuple[str, str]]) -> list[str]:
        """``name=value`` of every parameter that is content, in the order the client sent them."""
        found = []
        for name, value in pairs:
            if name in self.keys:
                continue
            shape = self.shapes.get(name)
            if shape is None or shape.fits is None or not shape.fits(value):
                found.append(f"{name}={value}")
        return found


# A flag in a query string is a word, not JSON's boolean (which no string fits).
FLAG = Enum("true", "false")


@dataclass(frozen=True, slots=True)
class KeyCarriers:
    """Every place a provider reads a request's credential from.

    ``headers`` by lower-case name (``authorization`` is read as its Bearer
    token, or its whole value under another scheme); ``params`` are query
    parameters.
    """

    headers: tuple[str, ...]
    params: tuple[str, ...] = ()

    def key_problem(self, headers: Mapping[str, str], query: QueryMap) -> ProxyError | None:
        """A 400 when the carriers could name two tenants: one given twice, or two different keys."""
        for name in self.params:
            if name in query.repeated:
                return bad_request(
                    f"The request gives the query parameter {name!r} more than once; send one key, once.",
                    ErrorCode.DUPLICATE_PARAMETER,
                )
        found: dict[str, str] = {}
        for name in self.headers:
            value = headers.get(name)
            if value and (key := _credential(name, value)):
                found.setdefault(key, f"the {name} header")
        for name in self.params:
            value = query.get(name)
            if value and (key := value.strip()):
                found.setdefault(key, f"?{name}=")
        if len(found) > 1:
            return bad_request(
                f"The request carries two different keys ({' and '.join(found.values())}); send one key, in one place.",
                ErrorCode.CONFLICTING_API_KEYS,
            )
        return None


def _credential(header: str, value: str) -> str:
    """The key a header carries: a Bearer token without its scheme, any other value as it is."""
    if header == "authorization":
        scheme, _, token = value.strip().partition(" ")
        if scheme.lower() == "bearer":
            return token.strip()
    return value.strip()


def known(params: dict[str, Shape], *, dollar: bool = False) -> dict[str, Shape]:
    """``params``, and with ``dollar`` each also under its ``$``-prefixed name (Google's system parameters)."""
    return {**params, **{f"${name}": shape for name, shape in params.items()}} if dollar else params
