"""A Chat conversation whose tool result carries an AWS secret access key, and a Rules file that masks it.

The daemon-level masking tests (two workers, one placeholder; the ``placeholder`` command printing the one
the provider received) send the same conversation through the same rule; it lives here once.
"""

from __future__ import annotations

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
RULES = r"""
[on_tool_response]
redact = [{ name = "aws-secret", regex = 'AWS_SECRET_ACCESS_KEY\s*=\s*(?P<value>[A-Za-z0-9/+]{40})', group = "value" }]
"""
MESSAGES = [
    {"role": "user", "content": "deploy"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "shell", "arguments": '{"cmd": "env"}'}}]},
    {"role": "tool", "tool_call_id": "c1", "content": f"HOME=/root\nAWS_SECRET_ACCESS_KEY={SECRET}\n"},
]
