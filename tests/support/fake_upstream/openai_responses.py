"""OpenAI Responses API (`POST /v1/responses`), JSON and typed SSE events.

Streams are `event: <type>\\ndata: {json with "type" and "sequence_number"}\\n\\n`
and follow the real lifecycle, which the SDK's `responses.stream()` helper
checks strictly: created, in_progress, then per output item added -> (content
part / argument deltas) -> done, then completed with the same response id.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from . import openai_format
from .script import ToolCall, new_id
from .wire import Plan, StoredResponse, Turn, json_plan, sse, sse_plan


def last_user_text(body: dict[str, Any]) -> str | None:
    """Text of the last user input: `input` is a string or a list of items."""
    value = body.get("input")
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        for item in reversed(value):
            if isinstance(item, dict) and item.get("role", "user") == "user" and "content" in item:
                content = item["content"]
                if isinstance(content, str):
                    return content
                if isinstance(content, list):
                    return "".join(
                        p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
                    )
    return None


def _usage(turn: Turn) -> dict[str, Any]:
    return {
        "input_tokens": turn.prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": turn.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": turn.prompt_tokens + turn.completion_tokens,
    }


def _response(turn: Turn, response_id: str, status: str, output: list[Any], usage: Any) -> dict[str, Any]:
    body = turn.body
    return {
        "id": response_id,
        "object": "response",
        "created_at": turn.created,
        "status": status,
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": turn.model,
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": None, "summary": None},
        "service_tier": "default",
        "store": body.get("store") is not False,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools", []),
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": usage,
        "user": None,
        "metadata": body.get("metadata") or {},
    }


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _message(item_id: str, text: str, status: str, with_content: bool = True) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": [_text_part(text)] if with_content else [],
    }


def _function_call(item_id: str, call: ToolCall, arguments: str, status: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "arguments": arguments,
        "call_id": call.id,
        "name": call.name,
    }


def _final_output(turn: Turn, message_id: str, call_ids: list[str]) -> list[dict[str, Any]]:
    output: list[dict[str, Any]] = []
    if turn.text or not turn.reply.tool_calls:
        output.append(_message(message_id, turn.text, "completed"))
    for item_id, call in zip(call_ids, turn.reply.tool_calls):
        output.append(_function_call(item_id, call, call.arguments_json, "completed"))
    return output


def responses(turn: Turn) -> Plan:
    """`POST /v1/responses`.

    Like OpenAI: a reply is stored unless `store` is false, under its id and
    for the key that created it; `previous_response_id` must name a stored
    reply of the same key (else 400 `previous_response_not_found`);
    `background: true` answers at once with a `queued` reply and no output.
    """
    owner = turn.request.headers.get("authorization", "")
    previous = turn.body.get("previous_response_id")
    if previous is not None and (previous not in turn.stored or turn.stored[previous].owner != owner):
        error = openai_format.error_object(400, f"Previous response with id '{previous}' not found.")
        error.update(param="previous_response_id", code="previous_response_not_found")
        return json_plan({"error": error}, 400)
    response_id = new_id("resp_", 48)
    message_id = new_id("msg_", 48)
    call_ids = [new_id("fc_", 48) for _ in turn.reply.tool_calls]
    if turn.body.get("store") is not False:
        output = _final_output(turn, message_id, call_ids)
        turn.stored[response_id] = StoredResponse(owner, _response(turn, response_id, "completed", output, _usage(turn)))
    if turn.body.get("background") is True and not turn.body.get("stream"):
        return json_plan(_response(turn, response_id, "queued", [], None))
    if not turn.body.get("stream"):
        output = _final_output(turn, message_id, call_ids)
        return json_plan(_response(turn, response_id, "completed", output, _usage(turn)))

    def error_event(sequence_number: int) -> bytes:
        # Each stream event is one HTTP chunk, so events sent == next sequence number.
        status = turn.reply.status if turn.reply.status >= 400 else 500
        err = openai_format.error_object(status, turn.reply.error_message, turn.reply.error_type)
        data = {
            "type": "error",
            "code": err["code"] or err["type"],
            "message": err["message"],
            "param": None,
            "sequence_number": sequence_number,
        }
        return sse(data, "error")

    return sse_plan(_events(turn, response_id, message_id, call_ids), error_event=error_event)


def _events(turn: Turn, response_id: str, message_id: str, call_ids: list[str]) -> Iterator[bytes]:
    sequence = 0

    def event(kind: str, **fields: Any) -> bytes:
        nonlocal sequence
        data = {"type": kind, **fields, "sequence_number": sequence}
        sequence += 1
        return sse(data, kind)

    yield event("response.created", response=_response(turn, response_id, "in_progress", [], None))
    yield event("response.in_progress", response=_response(turn, response_id, "in_progress", [], None))

    output_index = 0
    if turn.text or not turn.reply.tool_calls:
        yield event(
            "response.output_item.added",
            output_index=output_index,
            item=_message(message_id, "", "in_progress", with_content=False),
        )
        where = {"item_id": message_id, "output_index": output_index, "content_index": 0}
        yield event("response.content_part.added", **where, part=_text_part(""))
        for piece in turn.text_chunks:
            yield event("response.output_text.delta", **where, delta=piece, logprobs=[])
        yield event("response.output_text.done", **where, text=turn.text, logprobs=[])
        yield event("response.content_part.done", **where, part=_text_part(turn.text))
        yield event(
            "response.output_item.done",
            output_index=output_index,
            item=_message(message_id, turn.text, "completed"),
        )
        output_index += 1

    for item_id, call in zip(call_ids, turn.reply.tool_calls):
        yield event(
            "response.output_item.added",
            output_index=output_index,
            item=_function_call(item_id, call, "", "in_progress"),
        )
        where = {"item_id": item_id, "output_index": output_index}
        for piece in turn.reply.argument_chunks(call):
            yield event("response.function_call_arguments.delta", **where, delta=piece)
        yield event("response.function_call_arguments.done", **where, name=call.name, arguments=call.arguments_json)
        yield event(
            "response.output_item.done",
            output_index=output_index,
            item=_function_call(item_id, call, call.arguments_json, "completed"),
        )
        output_index += 1

    final = _response(turn, response_id, "completed", _final_output(turn, message_id, call_ids), _usage(turn))
    yield event("response.completed", response=final)
