"""The IVR's audio: which prompt files a site plays, and the text each is built from (the site's
menu and queue, and every prompt of the IVR flows).

`vcc prompts build` (tools/province/prompts.py) turns these texts into 8 kHz mono WAV files offline
(espeak-ng, then sox); the site node only plays files that exist, it never synthesizes.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from vcc.config import SiteConfig
from vcc.ivr.flow import Flow, MenuNode

# espeak-ng voices: Mandarin and English.
VOICES = {"zh": "cmn", "en": "en"}
# A prompt with variables ("You are number {position}.") is said as pieces: its fixed parts, each
# built from the template, and the number the variable holds, from these clips (0 to the most).
MOST_SAID_NUMBER = 60
_VARIABLE = re.compile(r"\{[^{}]*\}")
_NUMBER = re.compile(r"(\d+)")
_WORD = re.compile(r"\w")
QUEUE_TEXT = {
    "zh": "您的来电正在排队, 请稍候.",
    "en": "All our agents are busy. Please hold, your call is important to us.",
}
DEFAULT_MENU = {
    "zh": "欢迎致电. 请按键选择您需要的服务.",
    "en": "Welcome. Press a key for the service you need.",
}


@dataclass(frozen=True, slots=True)
class PromptSpec:
    """One file to build: spoken text in a voice, optionally followed by music on hold."""

    name: str
    text: str
    voice: str
    music_s: float = 0.0


def site_prompts(site: SiteConfig) -> dict[str, PromptSpec]:
    """The prompts a SIP site plays: its menu, and the queue's announcement with music after it."""
    lang = site.sip.language if site.sip is not None else "zh"
    voice = VOICES[lang]
    menu = site.ivr.prompt or DEFAULT_MENU[lang]
    return {
        "menu": PromptSpec(f"{site.id}-menu", menu, voice),
        "queue": PromptSpec(f"queue-{lang}", QUEUE_TEXT[lang], voice, music_s=20.0),
    }


def prompt_path(prompts_dir: str | Path, spec: PromptSpec) -> Path:
    return Path(prompts_dir).resolve() / f"{spec.name}.wav"


def played_path(path: Path) -> Path:
    """The A-law copy of a prompt that rtpengine plays, beside it (`vcc prompts build` makes it):
    what the line carries already, so a play costs the engine about a sixth of the 16-bit file's
    (docs/BENCHMARKS.md, SIP). The 16-bit file stays the prompt's reference."""
    return path.with_suffix(".pcma.wav")


# -- the prompts of IVR flows: one file per prompt text heard, named by a stable key -------------


def flow_prompt_name(flow_id: str, prompt_id: str, text: str, language: str) -> str:
    """The file's name for one text of a flow's prompt: a changed text (or voice) makes a new file,
    so a site never plays a stale recording of a prompt that was reworded."""
    digest = hashlib.sha256(f"{language}\n{text}".encode()).hexdigest()[:16]
    return f"flow-{flow_id}-{prompt_id}-{digest}"


def flow_prompt_specs(flow: Flow) -> list[PromptSpec]:
    """Every text a caller of `flow` may hear as one prompt, in each of its languages: each prompt
    alone, and each menu option with its key said after it (options are numbered 1, 2, ... after
    their `when`, so an option may get any key up to its place; the agent's is 0). A text with
    variables is filled in at run time, so it has no file (the site plays its menu file then)."""
    return list({spec.name: spec for _, spec in flow_prompt_files(flow)}.values())


def flow_prompt_files(flow: Flow) -> list[tuple[str, PromptSpec]]:
    """(prompt id, its file's spec) for every text of `flow_prompt_specs` (a listener telling
    which prompt it heard)."""
    keyed: dict[str, set[str]] = {}
    for node in flow.nodes.values():
        if isinstance(node, MenuNode):
            for place, option in enumerate(node.options, start=1):
                keyed.setdefault(option.prompt, set()).update(str(k) for k in range(1, place + 1))
            if node.agent is not None and node.agent_prompt is not None:
                keyed.setdefault(node.agent_prompt, set()).add("0")
    specs: list[tuple[str, PromptSpec]] = []
    for lang in flow.languages:
        voice = VOICES.get(lang)
        if voice is None:
            continue  # no espeak-ng voice chosen for it: its callers hear the menu file
        key_text = flow.prompt_text(flow.key_prompt, lang)
        for prompt_id in flow.prompts:
            text = flow.prompt_text(prompt_id, lang)
            texts = [text] + [text + key_text.replace("{key}", k) for k in sorted(keyed.get(prompt_id, ()))]
            for said in texts:
                if "{" in said or not said.strip():
                    continue
                name = flow_prompt_name(flow.id, prompt_id, said, lang)
                specs.append((prompt_id, PromptSpec(name, said, voice)))
            if _VARIABLE.search(text):
                specs += [(prompt_id, spec) for spec in _pieces(flow.id, prompt_id, text, lang, voice)]
                specs += [("number", number_spec(n, lang)) for n in range(MOST_SAID_NUMBER + 1)]
    return specs


def _pieces(flow_id: str, prompt_id: str, template: str, lang: str, voice: str) -> list[PromptSpec]:
    """The fixed parts of a prompt with variables, each a file of its own."""
    parts = [p for p in _VARIABLE.split(template) if _WORD.search(p)]
    return [PromptSpec(flow_prompt_name(flow_id, prompt_id, p, lang), p, voice) for p in parts]


def number_spec(n: int, lang: str) -> PromptSpec:
    return PromptSpec(f"number-{lang}-{n}", str(n), VOICES[lang])


def flow_prompt_pieces(prompts_dir: str | Path, flow_id: str, prompt_id: str, text: str) -> list[Path] | None:
    """A prompt with numbers filled in ("You are number 3.") as the files to play in turn: its
    fixed parts (as built from its template) and a clip per number; None when a piece has no
    file (a number past MOST_SAID_NUMBER, a variable that is not a number, not built)."""
    folder = Path(prompts_dir)
    # Punctuation alone (the "." after a number) is not said: it has no file.
    pieces = [p for p in _NUMBER.split(text) if _WORD.search(p)]
    if len(pieces) < 2:
        return None
    for lang in VOICES:
        files: list[Path] = []
        for piece in pieces:
            if _NUMBER.fullmatch(piece.strip()):
                n = int(piece.strip())
                path = folder / f"{number_spec(n, lang).name}.wav" if n <= MOST_SAID_NUMBER else None
            else:
                path = folder / f"{flow_prompt_name(flow_id, prompt_id, piece, lang)}.wav"
            if path is None or not path.exists():
                break
            files.append(path.resolve())
        else:
            return files
    return None


def flow_prompt_file(prompts_dir: str | Path, flow_id: str, prompt_id: str, text: str) -> Path | None:
    """The file of a flow's prompt as heard (the text names it in one of the voices), if built."""
    folder = Path(prompts_dir)
    for lang in VOICES:
        path = folder / f"{flow_prompt_name(flow_id, prompt_id, text, lang)}.wav"
        if path.exists():
            return path.resolve()
    return None
