"""Adjacent text parts of one message, read as the model reads them: side by side, as one text too.

A message may give its text in parts (Chat and Anthropic content blocks,
Responses ``input_text`` parts, Gemini ``parts``); the providers put them
next to each other in the model's context. Collected one string each, they
were joined with a line break like any two strings, so ``caps`` +
``em_block`` passed as ``caps\\nem_block`` while the model read
``capsem_block``.

Which separator a provider puts between two parts, if any, is not
documented, so both readings are checked (the stricter reading): each part
stays a text of its own, joined to the next by the line break as before (a
``launch`` part and a ``code 1234`` part still match ``launch\\s+code``),
and a run of two or more adjacent text parts is also one text joined with
nothing, placed right after its parts. The run is one more piece of the
engine's per-piece cache (``enforcement/pieces.py``): an agent resending the
same message resends the same run, decided once per tenant; a message of one
text part adds nothing. The cost is that text twice in the prompt a
whole-prompt policy reads (measured in the README). A part that is not text
(an image, a tool call) ends the run: the model does not read the texts
around it as one.
"""

from __future__ import annotations


class TextRun:
    """The text parts of one message seen so far, without a part between them that is not text."""

    __slots__ = ("sink", "texts")

    def __init__(self, sink: list[str]) -> None:
        self.sink = sink
        self.texts: list[str] = []

    def add(self, text: str) -> None:
        """A text part: a text of its own now, and part of the run."""
        self.sink.append(text)
        if text:
            self.texts.append(text)

    def end(self) -> None:
        """A part that is not text, or the message's end: a run of two or more texts goes to ``sink`` joined."""
        if len(self.texts) > 1:
            self.sink.append("".join(self.texts))
        self.texts.clear()
