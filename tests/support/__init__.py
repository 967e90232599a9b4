"""Helpers the tests share, so a test says only what it is about.

The proxy under test and its clients
    proxy.py       ``Proxy`` (a running proxy's URL and settings, SDK clients for it), the test keys and
                   their headers (``OPENAI_AUTH``...), ``in_thread`` for blocking SDK calls
    sdk.py         one call per provider through its SDK (``sdk_call``, ``chat``), the error it raises
                   (``sdk_error``, ``refused``, ``expected_error``), fd/socket accounting, ``policy_proxy``
    daemon.py      the real ``capsem-proxyd`` executable as a subprocess (``Daemon``, ``wait_for_log``)
    fake_upstream/ the fake provider (OpenAI, Anthropic, Gemini), scripted per test with ``Reply``
What a test sends and receives
    bodies.py      request bodies (``chat_body``, ``responses_body``, ``messages_body``, ``gemini_body``)
    replies.py     single reply events for a part driven alone (``chat_chunk``, ``chat_chunk_sse``)
    exchanges.py   an ``Exchange`` past routing (``exchange``, ``exchange_for(dialect)``)
    streams.py     the stream pump driven alone (``pump_writes``), stream scripts shared by the e2e tests
    engines.py     a policy engine built the way the daemon builds it
    policies.py    CAPSEM policies written for tests (hanging, raising, slow...)
    fuzzing.py     hypothesis strategies drawn from the providers' own vocabulary
Waiting and observing
    waiting.py     ``wait_until``: bounded polling on a state nobody announces, with a stated cap
    metrics.py     ``/metrics`` read as Prometheus reads it
    key_watch.py   the session-wide check that no test key reaches a log or a file
    otlp_receiver.py  an OTLP/HTTP receiver for the tracing tests

The hypothesis profiles (no deadline, derandomized) are in ``tests/conftest.py``.
"""
