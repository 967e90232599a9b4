"""``capsem-proxyd policy new NAME``: a working policy to start from, written where the operator says.

Writing a CAPSEM policy meant reading capsem's source for the hook
signatures and the ``Decision``/``Verdict`` imports, then finding out that
the module has to be importable. The skeleton is a module with every hook,
each with its signature, and a policy file beside it whose ``class =``
names it; with the folder given to both ``--policy-dir`` and
``--policy-path`` it loads as written and blocks the example word.
"""

from __future__ import annotations

import keyword
from dataclasses import dataclass
from pathlib import Path

# What the example blocks, so that the first run shows the policy at work.
EXAMPLE_WORD = "forbidden-example"

_MODULE = '''\
"""{class_name}: a CAPSEM policy for capsem-proxyd (from `capsem-proxyd policy new {name}`).

Each hook sees one point of an exchange and returns a Decision:
  Verdict.ALLOW  let it through (DEFAULT_SAFE_DECISION is a ready-made ALLOW)
  Verdict.BLOCK  refuse it: the client gets its provider's own error, naming this policy
  Verdict.LOG    let it through and record the decision (log, audit log, metrics)
  Verdict.CONFIRM blocked unless the proxy runs with --confirm-action allow
A hook you do not need can go: the base class allows everything.

Load it with the folder that holds this module on the import path:
  capsem-proxyd check --policy-dir FOLDER --policy-path FOLDER
where FOLDER also holds {name}.toml (its settings reach from_config).
"""

from __future__ import annotations

from typing import Any

from capsem.models import DEFAULT_SAFE_DECISION, Agent, Decision, Media, Reason, Verdict
from capsem.policies import Policy
from capsem.tools import Tool


class {class_name}(Policy):
    """Blocks the words of its policy file's blocked_words wherever they appear."""

    # Uncomment when the hooks compute for long (a model, a large scan): they then run in the
    # --policy-processes worker processes, each building its own copy from {name}.toml.
    # cpu_heavy = True

    def __init__(self, blocked_words: list[str]) -> None:
        super().__init__(
            name="{name}",
            description="Blocks the words listed in {name}.toml",
            authors="",
            url="",
        )
        self.blocked_words = [word.lower() for word in blocked_words]

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> {class_name} | None:
        """Built from {name}.toml (without the proxy's own keys: class, mode, fail_open, processes).

        Return None to switch the policy off; raise ValueError for a bad setting: check and start
        report it as one line naming the file.
        """
        if not config.get("enabled", True):
            return None
        words = config.get("blocked_words", [])
        if not isinstance(words, list) or not all(isinstance(word, str) for word in words):
            raise ValueError("blocked_words must be a list of strings")
        return cls(words)

    def _check(self, text: str, where: str) -> Decision:
        lowered = text.lower()
        for word in self.blocked_words:
            if word in lowered:
                return Decision(verdict=Verdict.BLOCK, reason=Reason.POLICY_VIOLATION,
                                details=f"{{word!r}} in {{where}}")
        return DEFAULT_SAFE_DECISION

    async def on_model_call(
        self, invocation_id: str, agent: Agent, model_name: str, system_instructions: str, prompt: str,
        media: list[Media],
    ) -> Decision:
        """Before the request goes to the provider: the prompt and the system instructions."""
        decision = self._check(prompt, "the prompt")
        if decision.verdict != Verdict.ALLOW:
            return decision
        return self._check(system_instructions, "the system instructions")

    async def on_tool_call(self, invocation_id: str, agent: Agent, tool: Tool, args: dict[str, Any]) -> Decision:
        """A tool call the model asked for (in a reply), or one the request replays."""
        return self._check(f"{{tool.name}} {{args}}", f"a call of tool {{tool.name!r}}")

    async def on_tool_response(
        self, invocation_id: str, agent: Agent, tool: Tool, response: dict[str, Any]
    ) -> Decision:
        """A tool's result the client sends back to the model."""
        return self._check(str(response), f"the result of tool {{tool.name!r}}")

    async def on_model_response(
        self, invocation_id: str, agent: Agent, response: str, thoughts: str, media: list[Media]
    ) -> Decision:
        """The model's answer (a stream is checked as its text grows) and its thoughts."""
        decision = self._check(response, "the model's answer")
        if decision.verdict != Verdict.ALLOW:
            return decision
        return self._check(thoughts, "the model's thoughts")
'''

_POLICY_FILE = '''\
# The policy file of {name}.py: capsem-proxyd loads every *.toml of --policy-dir.
class = "{name}:{class_name}"   # module:Class, imported from a --policy-path folder
# mode = "monitor"               # record what it would block, block nothing
# fail_open = true               # an error or a timeout in the policy lets the request through
# processes = false              # with cpu_heavy = True: run in the proxy's process anyway

# Everything else goes to {class_name}.from_config:
blocked_words = ["{example}"]
'''


class SkeletonError(Exception):
    """The skeleton cannot be written as asked; the message is one line."""


@dataclass(frozen=True, slots=True)
class Skeleton:
    """The two files of a new policy: its module and its policy file."""

    module: Path
    policy_file: Path
    class_name: str


def class_name_for(name: str) -> str:
    """``acme_guard`` -> ``AcmeGuardPolicy``."""
    return "".join(part[:1].upper() + part[1:] for part in name.split("_") if part) + "Policy"


def write_skeleton(name: str, folder: Path, *, overwrite: bool = False) -> Skeleton:
    """Write ``NAME.py`` and ``NAME.toml`` into ``folder`` (made if missing); SkeletonError when they exist
    (unless ``overwrite``) or ``name`` cannot be a module name."""
    if not name.isidentifier() or keyword.iskeyword(name) or not name.isascii():
        raise SkeletonError(f"{name!r} cannot name a Python module: use letters, digits and _ (e.g. acme_guard)")
    skeleton = Skeleton(folder / f"{name}.py", folder / f"{name}.toml", class_name_for(name))
    for path in (skeleton.module, skeleton.policy_file):
        if path.exists() and not overwrite:
            raise SkeletonError(f"{path} exists; choose another name or give --force to replace it")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        skeleton.module.write_text(_MODULE.format(name=name, class_name=skeleton.class_name), encoding="utf-8")
        skeleton.policy_file.write_text(
            _POLICY_FILE.format(name=name, class_name=skeleton.class_name, example=EXAMPLE_WORD), encoding="utf-8"
        )
    except OSError as error:
        raise SkeletonError(f"cannot write the policy into {folder}: {error.strerror or error}") from None
    return skeleton
