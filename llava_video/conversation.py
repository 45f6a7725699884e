"""LLaVA-Video's prompt: conversation templates, lmms-eval ``llava_vid``'s user turn and time instruction.

Pure Python (no torch, no transformers), so the runtime can build prompt strings cheaply.

lmms-eval's ``llava_vid`` (``llava-video-notes.md`` §2) appends one user message and an empty assistant
message to the chosen template; the user message is ``"<image>\\n" + [time_instruction + "\\n"] + question``.
The templates are LLaVA's ``conv_templates`` entries, rendered by their separator style:

================  ==========  ======================================================================  ==============
template          style       rendered prompt (``{u}`` = the user message)                            stop keyword
================  ==========  ======================================================================  ==============
``qwen_1_5``      ChatML      ``<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n``       ``<|im_end|>``
(= ``qwen_2``)                ``<|im_start|>user\\n{u}<|im_end|>\\n<|im_start|>assistant\\n``
``qwen_2_5``      ChatML      as ``qwen_1_5``, system "You are Qwen, created by Alibaba Cloud. You     ``<|im_end|>``
                              are a helpful assistant."
``chatml_direct`` MPT         ``<|im_start|>system\\nAnswer the questions.<|im_end|>``                 ``<|im_end|>``
                              ``<|im_start|>user\\n{u}<|im_end|><|im_start|>assistant\\n``
``vicuna_v1``     TWO         ``{system} USER: {u} ASSISTANT:`` with system "A chat between a curious  ``</s>``
                              user and an artificial intelligence assistant. The assistant gives
                              helpful, detailed, and polite answers to the user's questions."
================  ==========  ======================================================================  ==============

``vicuna_v1`` is lmms-eval's default ``conv_template``; LLaVA-Video is evaluated with ``qwen_1_5``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from llava_video.constants import DEFAULT_IMAGE_TOKEN, IM_END, IM_START

SeparatorStyle = Literal["chatml", "mpt", "two"]


@dataclass(frozen=True)
class ConversationTemplate:
    """One LLaVA conversation template, enough to render a single user turn followed by an open assistant turn.

    Args:
        name: the ``conv_template`` name.
        style: how the turns are joined (LLaVA's ``SeparatorStyle`` ``CHATML``, ``MPT`` or ``TWO``).
        system: the system text as LLaVA stores it (the ChatML/MPT ones include ``<|im_start|>system\\n``).
        roles: (user, assistant) role strings.
        sep: separator after a message (``sep2`` of ``TWO`` closes assistant turns and is the stop keyword).
        sep2: second separator (``TWO`` only).
    """

    name: str
    style: SeparatorStyle
    system: str
    roles: tuple[str, str]
    sep: str
    sep2: str | None = None

    def render(self, user_message: str) -> str:
        """The prompt for one user message, open for the assistant's answer (LLaVA's ``get_prompt``)."""
        user, assistant = self.roles
        if self.style == "chatml":
            head = "" if self.system == "" else self.system + self.sep + "\n"
            return f"{head}{user}\n{user_message}{self.sep}\n{assistant}\n"
        if self.style == "mpt":
            return f"{self.system}{self.sep}{user}{user_message}{self.sep}{assistant}"
        if self.style == "two":
            return f"{self.system}{self.sep}{user}: {user_message}{self.sep}{assistant}:"
        raise ValueError(f"unknown separator style {self.style!r}")

    @property
    def stop_strings(self) -> list[str]:
        """lmms-eval's stop keyword: ``sep``, or ``sep2`` for the ``TWO`` style."""
        return [self.sep2 if self.style == "two" and self.sep2 is not None else self.sep]


_CHATML_ROLES = (f"{IM_START}user", f"{IM_START}assistant")
_QWEN_SYSTEM = f"{IM_START}system\nYou are a helpful assistant."

CONV_TEMPLATES: dict[str, ConversationTemplate] = {
    "qwen_1_5": ConversationTemplate("qwen_1_5", "chatml", _QWEN_SYSTEM, _CHATML_ROLES, IM_END),
    "qwen_2": ConversationTemplate("qwen_2", "chatml", _QWEN_SYSTEM, _CHATML_ROLES, IM_END),
    "qwen_2_5": ConversationTemplate(
        "qwen_2_5", "chatml", f"{IM_START}system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
        _CHATML_ROLES, IM_END,
    ),
    "chatml_direct": ConversationTemplate(
        "chatml_direct", "mpt", f"{IM_START}system\nAnswer the questions.", (f"{IM_START}user\n", f"{IM_START}assistant\n"), IM_END,
    ),
    "vicuna_v1": ConversationTemplate(
        "vicuna_v1", "two",
        "A chat between a curious user and an artificial intelligence assistant. "
        "The assistant gives helpful, detailed, and polite answers to the user's questions.",
        ("USER", "ASSISTANT"), " ", "</s>",
    ),
}
#: The template LLaVA-Video is evaluated with (``docs/LLaVA_Video_1003.md``); lmms-eval's own default is ``vicuna_v1``.
DEFAULT_CONV_TEMPLATE = "qwen_1_5"


def get_template(conv_template: str) -> ConversationTemplate:
    """The template named ``conv_template`` (ValueError listing the known names otherwise)."""
    try:
        return CONV_TEMPLATES[conv_template]
    except KeyError:
        raise ValueError(f"unknown conv_template {conv_template!r}; known: {', '.join(CONV_TEMPLATES)}") from None


def time_instruction(video_time: float, frame_times: Sequence[float]) -> str:
    """lmms-eval ``llava_vid``'s time instruction, verbatim (no space before "Please").

    Args:
        video_time: the video's duration in seconds (``n_frames / avg_fps``).
        frame_times: the seconds of the sampled frames, in order; their count is the frame count stated.
    """
    times = [float(t) for t in frame_times]
    if not times:
        raise ValueError("frame_times is empty: the time instruction describes at least one sampled frame")
    frame_time = ",".join(f"{t:.2f}s" for t in times)
    return (
        f"The video lasts for {float(video_time):.2f} seconds, and {len(times)} frames are uniformly sampled from it. "
        f"These frames are located at {frame_time}.Please answer the following questions related to this video."
    )


def user_message(question: str, time_instruction: str | None = None) -> str:
    """lmms-eval ``llava_vid``'s user turn: ``"<image>\\n" + [time_instruction + "\\n"] + question``."""
    if DEFAULT_IMAGE_TOKEN in question or (time_instruction is not None and DEFAULT_IMAGE_TOKEN in time_instruction):
        raise ValueError(f"the question and time instruction must not contain {DEFAULT_IMAGE_TOKEN!r}; it is added once")
    middle = "" if time_instruction is None else time_instruction + "\n"
    return f"{DEFAULT_IMAGE_TOKEN}\n{middle}{question}"


def build_prompt(question: str, conv_template: str = DEFAULT_CONV_TEMPLATE, time_instruction: str | None = None) -> str:
    """The full prompt string, holding exactly one ``<image>``, open for the assistant's answer."""
    return get_template(conv_template).render(user_message(question, time_instruction))


__all__ = [
    "CONV_TEMPLATES",
    "ConversationTemplate",
    "DEFAULT_CONV_TEMPLATE",
    "build_prompt",
    "get_template",
    "time_instruction",
    "user_message",
]
