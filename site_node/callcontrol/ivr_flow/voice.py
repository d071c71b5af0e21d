"""What the caller hears: a flow's prompts in the caller's language, their variables filled in."""

from __future__ import annotations

import re
from collections.abc import Mapping

from site_node.callcontrol.ivr_flow.actions import Announcements
from vcc.ivr.flow import LANGUAGE_VAR, Flow, QueueNode

_PLACEHOLDER = re.compile(r"\{([a-z][a-z0-9_]*(?:\.[a-z0-9_]+)*)\}")
# Filled in by the queue as the wait goes on, not from the caller's variables.
_QUEUE_FIGURES = {"position": "{position}", "wait_min": "{wait_min}"}


class Voice:
    def __init__(self, flow: Flow, context: Mapping[str, str]) -> None:
        self._flow = flow
        # The run's own variables (not a copy): a language chosen in the flow is heard at once.
        self._context = context

    @property
    def language(self) -> str:
        for var in (LANGUAGE_VAR, "customer.language"):
            lang = self._context.get(var, "")
            if lang in self._flow.languages:
                return lang
        return self._flow.languages[0]

    def text(self, prompt_id: str, key: str = "") -> str:
        """A prompt's text; with `key`, the key prompt after it (the option first, then its key)."""
        flow = self._flow
        said = self.fill(flow.prompt_text(prompt_id, self.language))
        if key:
            said += flow.prompt_text(flow.key_prompt, self.language).replace("{key}", key)
        return said

    def fill(self, template: str, extra: Mapping[str, str] | None = None) -> str:
        values = self._context if extra is None else {**self._context, **extra}
        return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), ""), template)

    def announcements(self, node: QueueNode) -> Announcements | None:
        spec = node.treatment
        if spec is None:
            return None

        def text(prompt_id: str | None) -> str:
            if prompt_id is None:
                return ""
            return self.fill(self._flow.prompt_text(prompt_id, self.language), _QUEUE_FIGURES)

        return Announcements(
            spec.position_prompt or "",
            text(spec.position_prompt),
            spec.wait_prompt or "",
            text(spec.wait_prompt),
            spec.announce_every_s,
            spec.max_wait_s,
        )
