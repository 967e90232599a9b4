"""Adjacent text parts of one message, read as the model reads them: side by side, one text.

A message may give its text in parts (Chat and Anthropic content blocks,
Responses ``input_text`` parts, Gemini ``parts``); the providers put them
next to each other in the model's context, with nothing between. Collected
as one string each, they were joined with a line break like any two
strings, so ``caps`` + ``em_block`` passed as ``caps\\nem_block`` while the
model read ``capsem_block``. A run of adjacent text parts is now one text,
joined with nothing: exactly what the client would have sent as one part.

Joined *instead of* the line break, not besides it: the line break was the
proxy's own, no provider puts one there, and checking both would put each
such message twice into the prompt every policy reads (a whole-prompt
policy counting findings would count them twice) for no reading the model
has. A run is one piece of the engine's per-piece cache like the parts were
(``enforcement/pieces.py``): an agent resending the same message resends the
same run, decided once per tenant. A part that is not text (an image, a
tool call) ends the run: the model does not read the texts around it as one.
"""

from __future__ import annotations


class TextRun:
    """The text parts of one message seen so far, without a part between them that is not text."""

    __slots__ = ("sink", "texts")

    def __init__(self, sink: list[str]) -> None:
        self.sink = sink
        self.texts: list[str] = []

    def add(self, text: str) -> None:
        self.texts.append(text)

    def end(self) -> None:
        """A part that is not text, or the message's end: the run so far goes to ``sink`` as one text."""
        if self.texts:
            self.sink.append(self.texts[0] if len(self.texts) == 1 else "".join(self.texts))
            self.texts.clear()
