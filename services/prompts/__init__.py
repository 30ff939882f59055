"""Prompt sources for the generation actors: records, a deterministic resumable file source."""

from services.prompts.file_source import FilePromptSource, PromptCursor
from services.prompts.record import PromptFileError, PromptRecord, read_prompt_file

__all__ = ["FilePromptSource", "PromptCursor", "PromptFileError", "PromptRecord", "read_prompt_file"]
