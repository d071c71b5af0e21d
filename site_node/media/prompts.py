"""The IVR's audio: which prompt files a site plays, and the text each is built from.

`vcc prompts build` (tools/province/prompts.py) turns these texts into 8 kHz mono WAV files offline
(espeak-ng, then sox); the site node only plays files that exist, it never synthesizes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vcc.config import SiteConfig

# espeak-ng voices: Mandarin and English.
VOICES = {"zh": "cmn", "en": "en"}
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
