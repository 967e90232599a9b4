"""Every error the proxy answers with, built in one place.

A ``ProxyError`` is raised anywhere in the pipeline and answered by the edge
in the caller's provider shape (each dialect renders it, ``error_body``), so
the SDK raises its own exception type with our message. The builders below
are the only place an error's status, kind and code are chosen; none of them
logs: whoever refuses decides what is worth a log line.

``kind`` is provider-neutral (``ErrorKind``, a closed set); every dialect
maps each kind to its own error type, and a test holds every dialect's map
to every kind. ``code`` is the machine-readable reason clients see
(``ErrorCode``, a closed set too: clients and operators match on it); the
kind's name when an error has none.
"""

from __future__ import annotations

from enum import StrEnum

from capsem.models import Decision, Reason, Verdict


class ErrorKind(StrEnum):
    """What went wrong, in no provider's words; dialects turn it into theirs."""

    INVALID_REQUEST = "invalid_request"  # the client's request, as sent, is refused
    AUTHENTICATION = "authentication"  # no key, or a key this instance does not serve
    POLICY = "policy"  # a CAPSEM policy refused the content (or asks for confirmation)
    NOT_FOUND = "not_found"  # a path the proxy does not proxy
    TOO_LARGE = "too_large"  # a request body beyond --max-body-size
    UPSTREAM_ERROR = "upstream_error"  # the provider, or the proxy itself, failed to answer
    UPSTREAM_TIMEOUT = "upstream_timeout"  # the provider did not answer in time


class ErrorCode(StrEnum):
    """Why, more precisely than the kind: the ``code`` clients see (Gemini's ``ErrorInfo.reason``, upper-cased)."""

    # the client's request
    MISSING_API_KEY = "missing_api_key"
    TENANT_NOT_ALLOWED = "tenant_not_allowed"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    REQUEST_TIMEOUT = "request_timeout"
    AMBIGUOUS_REQUEST_FRAMING = "ambiguous_request_framing"
    REQUEST_HEADER_FIELDS_TOO_LARGE = "request_header_fields_too_large"
    DUPLICATE_FIELD = "duplicate_field"  # one field in two spellings (Gemini's camelCase twins)
    DUPLICATE_KEY = "duplicate_key"
    DUPLICATE_HEADER = "duplicate_header"  # a header that decides how the request is read, given twice
    DUPLICATE_PARAMETER = "duplicate_parameter"  # a query parameter that carries a key, given twice
    CONFLICTING_API_KEYS = "conflicting_api_keys"  # two places the provider reads a key from, two different keys
    UNSUPPORTED_CONTENT_TYPE = "unsupported_content_type"
    INVALID_ENCODING = "invalid_encoding"
    UNSUPPORTED_CHARSET = "unsupported_charset"
    UNREADABLE_TOKEN_IDS = "unreadable_token_ids"
    # policies
    CAPSEM_BLOCKED = "capsem_blocked"
    CAPSEM_CONFIRMATION_REQUIRED = "capsem_confirmation_required"
    CAPSEM_STORED_CONTENT = "capsem_stored_content"
    # the upstream and the proxy itself
    STORED_CONTENT_UNAVAILABLE = "stored_content_unavailable"
    AUDIT_LOG_UNAVAILABLE = "audit_log_unavailable"
    POLICY_WORKERS_UNAVAILABLE = "policy_workers_unavailable"
    UPSTREAM_UNAVAILABLE = "upstream_unavailable"
    UPSTREAM_TIMEOUT = "upstream_timeout"
    UPSTREAM_RESPONSE_TOO_LARGE = "upstream_response_too_large"
    REPLY_MEMORY_FULL = "reply_memory_full"  # --reply-memory: no room for a non-streamed reply (retryable)
    SERVER_SHUTTING_DOWN = "server_shutting_down"
    INTERNAL_ERROR = "internal_error"


class ProxyError(Exception):
    """An error answered to the client with ``status`` and a provider-shaped body."""

    def __init__(
        self,
        status: int,
        kind: ErrorKind,
        message: str,
        *,
        code: ErrorCode | None = None,
        decision: Decision | None = None,
        param: str | None = None,
        cause: str = "",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message
        self.code: str = str(code or kind)  # a plain string on the wire and in logs, as it always was
        self.decision = decision
        self.param = param  # the request field the error is about, where the provider's shape names one
        # For the operator's log, not the client: what the transport said (an upstream failure's own words).
        self.cause = cause


# -- the client's request -------------------------------------------------------


def bad_request(message: str, code: ErrorCode | None = None) -> ProxyError:
    return ProxyError(400, ErrorKind.INVALID_REQUEST, message, code=code)


def missing_key() -> ProxyError:
    return ProxyError(
        401, ErrorKind.AUTHENTICATION,
        "No API key was provided: pass your provider key as you would to the provider itself.",
        code=ErrorCode.MISSING_API_KEY,
    )


def tenant_not_allowed() -> ProxyError:
    return ProxyError(
        401, ErrorKind.AUTHENTICATION, "This API key is not allowed to use this capsem-proxyd instance.",
        code=ErrorCode.TENANT_NOT_ALLOWED,
    )


def not_proxied(path: str) -> ProxyError:
    return ProxyError(404, ErrorKind.NOT_FOUND, f"{path} is not proxied by capsem-proxyd.")


def method_not_allowed(method: str, path: str) -> ProxyError:
    return ProxyError(405, ErrorKind.INVALID_REQUEST, f"Method {method} is not allowed on {path}.", code=ErrorCode.METHOD_NOT_ALLOWED)


def unsafe_path() -> ProxyError:
    """The client path would not stay inside the proxied API once joined to the upstream base."""
    return bad_request("The request path has segments capsem-proxyd never forwards (dot segments, encoded characters).")


def body_too_large() -> ProxyError:
    return ProxyError(413, ErrorKind.TOO_LARGE, "The request body is larger than this proxy accepts.")


def body_too_slow(seconds: float | None) -> ProxyError:
    return ProxyError(
        408, ErrorKind.INVALID_REQUEST, f"The request body did not arrive within {seconds}s (--body-timeout).",
        code=ErrorCode.REQUEST_TIMEOUT,
    )


def ambiguous_framing(message: str) -> ProxyError:
    return bad_request(message + " Refused: a request must be framed one way only.", ErrorCode.AMBIGUOUS_REQUEST_FRAMING)


def headers_too_large(message: str) -> ProxyError:
    return ProxyError(431, ErrorKind.INVALID_REQUEST, message, code=ErrorCode.REQUEST_HEADER_FIELDS_TOO_LARGE)


def too_many(what: str, limit: int) -> ProxyError:
    return bad_request(f"Too many items: {what}; at most {limit} are accepted.")


# -- policies ---------------------------------------------------------------------


def policy_blocked(decision: Decision, what: str) -> ProxyError:
    """A request or reply refused by policy; ``what`` names the checked thing.

    400, not 403: a refusal of this content, final, that no client should take
    for a credentials problem or retry. Codex retries every status but 400 (a
    403 six times); pydantic-ai and Claude Code read 401/403 as authentication
    failures ("Failed to authenticate"); every official SDK, Gemini CLI and the
    Vercel AI SDK treat 400 as final. The message starts with what was blocked
    and names the policy, since clients show it as it is.
    """
    confirm = decision.verdict.value != "BLOCK"
    code = ErrorCode.CAPSEM_CONFIRMATION_REQUIRED if confirm else ErrorCode.CAPSEM_BLOCKED
    verb = "needs confirmation" if confirm else "blocked"
    message = (
        f"{what} {verb} by CAPSEM policy '{decision.policy}' "
        f"({decision.reason.value}): {decision.details}"
    )
    return ProxyError(400, ErrorKind.POLICY, message, code=code, decision=decision)


def unmaskable(policy: str, hook: str, why: str, what: str = "Request") -> ProxyError:
    """Content a policy asked to mask that cannot be masked exactly (``redaction/rewrite.py``): refused as
    ``policy``'s BLOCK on ``hook`` rather than forwarded (``what``: ``Request``, or ``Response`` for a
    reply). ``why`` never quotes the value."""
    decision = Decision(policy=policy, callback=hook, verdict=Verdict.BLOCK,
                        reason=Reason.POLICY_VIOLATION, details=f"it cannot be masked exactly: {why}")
    return policy_blocked(decision, what)


def stored_content_refused(field: str, mode: str) -> ProxyError:
    """A request refers to content stored at the provider that ``--stored-content`` does not admit.

    400 like a policy block, and for the same clients: final, never read as a credentials problem."""
    if mode == "checked":
        message = f"{field} refers to stored content capsem-proxyd did not deliver to this tenant (--stored-content checked)."
    else:
        message = f"{field} refers to content stored at the provider, which capsem-proxyd cannot check (--stored-content {mode})."
    return ProxyError(400, ErrorKind.INVALID_REQUEST, message, code=ErrorCode.CAPSEM_STORED_CONTENT, param=field)


def stored_content_unavailable() -> ProxyError:
    """``--stored-content checked`` could not consult its record of delivered replies: refused, not guessed."""
    return ProxyError(
        503, ErrorKind.UPSTREAM_ERROR, "capsem-proxyd could not consult its record of delivered replies; see its log.",
        code=ErrorCode.STORED_CONTENT_UNAVAILABLE,
    )


def audit_log_unavailable() -> ProxyError:
    """``--audit-failure block``: the audit log cannot be written, so nothing is forwarded unrecorded.

    503, retryable: every SDK retries it, and the proxy recovers by itself once the log is writable again."""
    return ProxyError(
        503, ErrorKind.UPSTREAM_ERROR, "capsem-proxyd cannot write its audit log (disk full or unwritable), so it "
        "forwards nothing until it can; retry later, and see its log and /health.",
        code=ErrorCode.AUDIT_LOG_UNAVAILABLE,
    )


def policy_workers_unavailable(policy: str, why: str) -> ProxyError:
    """A CPU-heavy policy had no worker process ready within its deadline (they are restarting).

    503, not a policy's 400: nothing was decided about this content, and the
    official SDKs retry a 503 (with backoff) where a 400 is final. No decision:
    the content was refused because it could not be checked (fail closed)."""
    return ProxyError(
        503, ErrorKind.UPSTREAM_ERROR,
        f"CAPSEM policy '{policy}' could not check this request: its worker processes are restarting ({why}). "
        "Nothing was forwarded; retry shortly.",
        code=ErrorCode.POLICY_WORKERS_UNAVAILABLE,
    )


def decision_fields(decision: Decision) -> dict[str, str]:
    """The CAPSEM decision as it travels in error bodies, for operators to trace."""
    return {
        "policy": decision.policy,
        "verdict": decision.verdict.value,
        "reason": decision.reason.value,
        "details": decision.details,
        "decision_id": decision.id,
        "hook": decision.callback,
    }


# -- the upstream and the proxy itself -------------------------------------------


def upstream_unavailable(message: str, cause: str = "") -> ProxyError:
    """502: the upstream could not be reached or broke off. ``cause``: the transport's words, for the log only."""
    return ProxyError(502, ErrorKind.UPSTREAM_ERROR, message, code=ErrorCode.UPSTREAM_UNAVAILABLE, cause=cause)


def upstream_timeout(message: str, cause: str = "") -> ProxyError:
    return ProxyError(504, ErrorKind.UPSTREAM_TIMEOUT, message, code=ErrorCode.UPSTREAM_TIMEOUT, cause=cause)


def transport_cause(error: BaseException) -> str:
    """An exception in its own words for the operator's log: type, then message (``ConnectError:
    [Errno 111] Connection refused``), at most 300 characters. httpx words its errors without the URL;
    the log's redaction filter stands behind it all the same."""
    words = str(error)
    return f"{type(error).__name__}: {words}"[:300] if words else type(error).__name__


def response_too_large(limit: int) -> ProxyError:
    return ProxyError(
        502, ErrorKind.UPSTREAM_ERROR, f"The upstream reply exceeds {limit} bytes, the most this proxy relays.",
        code=ErrorCode.UPSTREAM_RESPONSE_TOO_LARGE,
    )


def reply_memory_full(capacity: int, *, larger: bool) -> ProxyError:
    """No room in ``--reply-memory`` for a non-streamed reply: 503, retryable (the SDKs retry it).

    ``larger``: the reply alone is larger than the whole budget, so it was refused
    at once (a retry fails the same way; a stream would not be held whole)."""
    if larger:
        message = (f"The upstream reply is larger than the {capacity} bytes capsem-proxyd holds for non-streamed "
                   "replies at once (--reply-memory); ask for a streamed reply.")
    else:
        message = (f"capsem-proxyd holds as many non-streamed replies as its memory allows ({capacity} bytes, "
                   "--reply-memory) and none finished in time; retry shortly.")
    return ProxyError(503, ErrorKind.UPSTREAM_ERROR, message, code=ErrorCode.REPLY_MEMORY_FULL)


def shutting_down() -> ProxyError:
    return ProxyError(
        503, ErrorKind.UPSTREAM_ERROR, "capsem-proxyd is shutting down; this stream was cut.", code=ErrorCode.SERVER_SHUTTING_DOWN
    )


def internal_error() -> ProxyError:
    return ProxyError(500, ErrorKind.UPSTREAM_ERROR, "capsem-proxyd hit an internal error; see its log.", code=ErrorCode.INTERNAL_ERROR)
