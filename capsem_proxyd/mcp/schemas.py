"""A tool's approved JSON Schemas applied on the MCP hop, the one way the official SDK applies them.

Two places need it: a ``tools/call``'s ``arguments`` checked against the tool's
approved ``inputSchema`` before the call is forwarded (``checks.py``), and a
masked result's ``structuredContent`` against its approved ``outputSchema``
(``redact.py``). "Approved" is the pinned definition, the one the client was
served (``pins.py``): a server that later changes only a description still
has its calls checked against the schema the operator approved.

A validator is built here only: the schema's own draft (``validator_for``),
the schema itself checked first, ``$ref`` resolved within the schema only (an
empty registry: no remote fetch, which would let a server make the proxy
reach any address). A schema that cannot be applied (invalid, an unresolvable
``$ref``) is ``Unusable``: what it was to check is refused, never let through
unchecked (fail closed).

What a refusal says comes from the schema, never from the value checked: the
keyword that failed and where in the schema, so no argument (a key, a token)
is echoed into the client's error, a log line or an audit record.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import orjson


class Unusable(Exception):
    """The schema cannot be applied: it is not a valid JSON Schema, or a ``$ref`` cannot be resolved."""


# Validators by the schema's canonical bytes: a tool is called again and again with the one approved
# schema, and checking a schema and building its validator cost more than validating a call's arguments.
_VALIDATORS: OrderedDict[bytes, Any] = OrderedDict()
_VALIDATORS_KEPT = 256


def _validator(schema: Any) -> Any:
    """The validator of ``schema``'s own draft, the schema checked and no remote ``$ref`` resolvable;
    raises ``Unusable``. Remembered for the last ``_VALIDATORS_KEPT`` schemas (an unusable one too)."""
    try:
        key = orjson.dumps(schema, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        return _built(schema)
    known = _VALIDATORS.get(key)
    if known is None:
        try:
            known = _built(schema)
        except Unusable as error:
            known = error
        _VALIDATORS[key] = known
        if len(_VALIDATORS) > _VALIDATORS_KEPT:
            _VALIDATORS.popitem(last=False)
    else:
        _VALIDATORS.move_to_end(key)
    if isinstance(known, Unusable):
        raise Unusable(str(known))
    return known


def _built(schema: Any) -> Any:
    # Imported here, as the SDK does: only a call or a masked result needs it, and it costs the start ~40 ms.
    from jsonschema import SchemaError
    from jsonschema.validators import validator_for
    from referencing import Registry

    if not isinstance(schema, (dict, bool)):
        raise Unusable(f"a schema is a JSON object, not {type(schema).__name__}")
    try:
        cls = validator_for(schema)
        cls.check_schema(schema)
    except SchemaError as error:
        raise Unusable(f"keyword '{error.validator}' at {_where(error.absolute_path)} is invalid") from None
    return cls(schema, registry=Registry())


def mismatch(value: Any, schema: Any) -> str | None:
    """What in ``schema`` ``value`` does not satisfy (the keyword, where in the schema, what the schema
    asks: never the value), or None when it is valid. Raises ``Unusable``."""
    from jsonschema.exceptions import best_match
    from referencing.exceptions import Unresolvable

    validator = _validator(schema)
    try:
        error = best_match(validator.iter_errors(value))
    except Unresolvable as unresolved:
        raise Unusable(f"its $ref cannot be resolved ({type(unresolved).__name__})") from None
    if error is None:
        return None
    wanted = ""
    if error.validator in ("type", "required", "enum", "const", "minimum", "maximum", "minLength", "maxLength",
                           "minItems", "maxItems", "additionalProperties"):
        wanted = f" (the schema asks {error.validator}: {_short(error.validator_value)})"
    return f"keyword '{error.validator}' at {_where(error.absolute_schema_path)} is not satisfied{wanted}"


def conforms(value: Any, schema: Any) -> bool:
    """Whether ``value`` is valid under ``schema``, as the official SDK's client checks a result. A schema
    that cannot be applied does not conform: the value is not forwarded in that shape."""
    from referencing.exceptions import Unresolvable

    try:
        return bool(_validator(schema).is_valid(value))
    except (Unusable, Unresolvable):
        return False


def _where(path: Any) -> str:
    """A path in the schema (its keywords and property names: the approved schema's words) as ``$.a.b``."""
    return "$" + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in path)


def _short(value: Any) -> str:
    text = orjson.dumps(value, default=str).decode("utf-8", "replace")
    return text if len(text) <= 120 else text[:117] + "..."
