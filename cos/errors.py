"""Project-wide errors. Every error a user can cause derives from :class:`CosError`."""

from __future__ import annotations

import os


class CosError(Exception):
    """Base class of the errors raised by the ``cos`` package."""


class VideoDecodeError(CosError):
    """A video could not be read. The message names the path and the cause."""

    def __init__(self, path: str | os.PathLike, cause: str):
        self.path = str(path)
        self.cause = cause
        super().__init__(f"cannot decode video {self.path!r}: {cause}")


class ConfigError(CosError, ValueError):
    """An option has an invalid value or name; the message lists what is valid."""


class InputError(CosError):
    """A sample's input cannot be answered faithfully (the message says why)."""


class EmptyQuestionError(InputError):
    """The question (the task's prompt) is empty or only whitespace."""


class ContextBudgetError(InputError):
    """Prompt + visual tokens exceed the model's context budget (LongVA's ``tokenizer_model_max_length``)."""
