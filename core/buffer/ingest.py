"""Offline data into the buffer: `tandem ingest FILE.jsonl`.

Each line: {"prompt": str, "completions": [str, ...], "rewards": [number, ...]?, "reference": str?,
"prompt_id": str?, "policy_version": int? (default 0), "source": str? (default "offline"),
"prompt_token_ids": [int]?, "completion_token_ids": [[int], ...]?, "truncated": bool?} (the format:
core/offline_file.py). Lines without token ids are tokenised with the policy's tokenizer exactly as
the actors tokenise (core/tokenization.py: the prompt with its BOS, the completion ending with EOS
unless `truncated`), so an offline row's log-prob is that of a whole sample, not of a prefix. A chat
line (`messages` instead of `prompt`) is rendered by the policy's chat template with the function the
actors use (`render_chat`): its ids are the row's prompt ids (unless the line gives its own), its text
is the group's prompt and what the reward server scores, with the messages in the item's metadata.
Lines
without rewards are scored by the reward server (`POST /v1/score`, batched across lines), and an item
it fails to score fails the ingest (never a silent 0). Behaviour log-probs are unknown for offline
data (None). The whole file is parsed, tokenised and scored before anything is written, then written
in one transaction: a malformed line (reported with its number and field) leaves the buffer untouched.
Poison lines, which the learner could not train on (token ids past the model's vocabulary, more tokens
than its positions: core/buffer/screening.py), are left out, reported with their file and line, and
written to a dead-letter file (default: `FILE.dead_letter.jsonl` beside the input) for inspection.
"""

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.buffer.screening import ModelLimits, model_limits, poison_reason

# The line format lives in a torch-free module (preflight reads it before torch); re-exported here.
from core.offline_file import IngestError, OfflineLine, is_number, parse_offline_file
from core.prompts.record import ChatMessage, scoring_metadata
from core.schemas import Sample, ScoredGroup
from core.tokenization import (
    ChatTemplateError,
    ChatTokenizer,
    RenderedPrompt,
    completion_token_ids,
    load_tokenizer,
    prompt_token_ids,
    render_chat,
)

log = logging.getLogger(__name__)
# items [{"prompt", "completion", "reference"}] -> results [{"reward", "status", "scores", "error"}]
Score = Callable[[list[dict[str, Any]]], list[dict[str, Any]]]
SCORE_BATCH = 256  # completions per reward-server request

__all__ = [
    "IngestError",
    "OfflineBatch",
    "OfflineLine",
    "OfflineTokenizer",
    "Rejected",
    "build_offline_groups",
    "default_dead_letter",
    "hf_tokenizer",
    "http_scorer",
    "parse_offline_file",
    "prepare_offline_groups",
    "write_dead_letters",
]


@dataclass(frozen=True)
class OfflineTokenizer:
    """The policy's tokenizer for offline lines, and the model's limits when its directory has them;
    `model` names it in errors (a chat line for a tokenizer without a chat template)."""

    tokenizer: ChatTokenizer
    limits: ModelLimits | None = None
    model: str = "the policy"

    def prompt(self, text: "str | RenderedPrompt") -> list[int]:
        return prompt_token_ids(self.tokenizer, text)

    def chat(self, messages: list[ChatMessage]) -> RenderedPrompt:
        return render_chat(self.tokenizer, messages, self.model)

    def completion(self, text: str, truncated: bool) -> list[int]:
        return completion_token_ids(self.tokenizer, text, truncated)


@dataclass(frozen=True)
class Rejected:
    """A poison line: left out of the buffer, kept in the dead-letter file with its reason."""

    where: str  # "FILE:LINE"
    group: ScoredGroup
    reason: str


@dataclass
class OfflineBatch:
    groups: list[ScoredGroup]
    rejected: list[Rejected] = field(default_factory=list)


def build_offline_groups(
    lines: list[OfflineLine],
    tokenizer: OfflineTokenizer | None,
    score: Score | None,
    limits: ModelLimits | None = None,
    dead_letter: Path | None = None,
) -> list[ScoredGroup]:
    """The groups of `prepare_offline_groups`; poison lines are logged with their file and line and
    written to `dead_letter` (default: beside the input file)."""
    batch = prepare_offline_groups(lines, tokenizer, score, limits)
    if batch.rejected:
        write_dead_letters(batch.rejected, dead_letter or default_dead_letter(batch.rejected[0].where))
    return batch.groups


def prepare_offline_groups(
    lines: list[OfflineLine],
    tokenizer: OfflineTokenizer | None,
    score: Score | None,
    limits: ModelLimits | None = None,
) -> OfflineBatch:
    """Tokenise and score every line (all or nothing: what is missing fails before any request), then
    set the poison ones aside. `limits` default to the tokenizer's (its model directory's config)."""
    limits = limits or (tokenizer.limits if tokenizer is not None else None)
    for line in lines:
        if line.rewards is None and score is None:
            raise IngestError(f"{line.where}: field 'rewards' missing and no --reward-url to score it")
    texts = [_prompt_text(line, tokenizer) for line in lines]
    token_ids = [_token_ids(line, text, tokenizer) for line, text in zip(lines, texts, strict=True)]
    scored = _score_unrewarded(lines, texts, score) if score is not None else {}
    batch = OfflineBatch(groups=[])
    for line, text, (prompt_ids, completion_ids) in zip(lines, texts, token_ids, strict=True):
        rewards, details = scored.get(line.where) or (line.rewards or [], [{} for _ in line.completions])
        try:
            group = _group(line, _plain(text), prompt_ids, completion_ids, rewards, details)
        except (ValueError, OverflowError) as error:  # a record the wire format refuses, named by line
            raise IngestError(f"{line.where}: {error}") from None
        reason = poison_reason(group, limits) if limits is not None else None
        if reason is None:
            batch.groups.append(group)
        else:
            log.warning("%s: left out, %s", line.where, reason)
            batch.rejected.append(Rejected(line.where, group, reason))
    return batch


def _group(
    line: OfflineLine,
    prompt: str,
    prompt_ids: list[int],
    completion_ids: list[list[int]],
    rewards: list[float],
    details: list[dict[str, float]],
) -> ScoredGroup:
    now = time.time()
    samples = [
        Sample(line.prompt_id, prompt_ids, ids, text, None, "offline", line.policy_version, "ingest", now)
        for text, ids in zip(line.completions, completion_ids, strict=True)
    ]
    return ScoredGroup(
        group_id=f"{line.source}:{line.prompt_id}",
        prompt=prompt,
        prompt_token_ids=prompt_ids,
        samples=samples,
        rewards=list(rewards),
        reward_status=["ok"] * len(samples),
        reward_details=details,
        source=line.source,
        reference=line.reference,
    )


def _prompt_text(line: OfflineLine, tokenizer: OfflineTokenizer | None) -> "str | RenderedPrompt":
    """The line's prompt text, or its messages rendered once by the chat template (text and ids)."""
    if line.messages is None:
        assert line.prompt is not None  # the parser gives one of the two
        return line.prompt
    if tokenizer is None:
        raise IngestError(f"{line.where}: field 'messages' needs the chat template: give --tokenizer")
    try:
        return tokenizer.chat(line.messages)
    except ChatTemplateError as error:
        raise IngestError(f"{line.where}: {error}") from None


def _plain(prompt: "str | RenderedPrompt") -> str:
    return prompt.text if isinstance(prompt, RenderedPrompt) else prompt


def _token_ids(
    line: OfflineLine, prompt: "str | RenderedPrompt", tokenizer: OfflineTokenizer | None
) -> tuple[list[int], list[list[int]]]:
    if line.prompt_token_ids is not None and line.completion_token_ids is not None:
        return line.prompt_token_ids, line.completion_token_ids  # as given: the line's author decides EOS
    if tokenizer is None:
        raise IngestError(f"{line.where}: no 'prompt_token_ids' in the line and no --tokenizer given")
    truncated = line.truncated or [False] * len(line.completions)
    try:
        return tokenizer.prompt(prompt), [
            tokenizer.completion(text, cut) for text, cut in zip(line.completions, truncated, strict=True)
        ]
    except ValueError as error:
        raise IngestError(f"{line.where}: {error}") from None


def default_dead_letter(where: str) -> Path:
    """`FILE.dead_letter.jsonl` beside the input file `where` ("FILE:LINE") names."""
    return Path(f"{where.rsplit(':', 1)[0]}.dead_letter.jsonl")


def write_dead_letters(rejected: list[Rejected], path: Path) -> Path:
    """Append the poison lines to `path` (JSONL, one line each, synced): what each was and why."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        for item in rejected:
            group = item.group
            record = {
                "source_line": item.where,
                "group_id": group.group_id,
                "prompt_id": group.samples[0].prompt_id,
                "prompt": group.prompt,
                "prompt_token_ids": list(group.prompt_token_ids),
                "reference": group.reference,
                "policy_version": group.policy_version,
                "reason": item.reason,
                "written_at": time.time(),
                "samples": [
                    {
                        "completion": sample.completion_text,
                        "completion_token_ids": list(sample.completion_token_ids),
                        "reward": reward,
                    }
                    for sample, reward in zip(group.samples, group.rewards, strict=True)
                ],
            }
            handle.write(json.dumps(record) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    return path


def _score_unrewarded(
    lines: list[OfflineLine], prompts: list["str | RenderedPrompt"], score: Score
) -> dict[str, tuple[list[float], list[dict[str, float]]]]:
    """Rewards and per-scorer details of the lines without rewards, keyed by `where`; a chat line is
    scored on its rendered text, as the actors score theirs."""
    texts = {line.where: _plain(prompt) for line, prompt in zip(lines, prompts, strict=True)}
    items = [
        (line, index) for line in lines if line.rewards is None for index in range(len(line.completions))
    ]
    results: list[dict[str, Any]] = []
    for start in range(0, len(items), SCORE_BATCH):
        chunk = items[start : start + SCORE_BATCH]
        request = [_score_item(line, texts[line.where], line.completions[i]) for line, i in chunk]
        reply = score(request)
        if len(reply) != len(request):
            raise IngestError(f"the reward server answered {len(reply)} results for {len(request)} items")
        results += reply
    scored: dict[str, tuple[list[float], list[dict[str, float]]]] = {}
    for (line, index), result in zip(items, results, strict=True):
        if result.get("status") != "ok" or not is_number(result.get("reward")):
            raise IngestError(
                f"{line.where}: the reward server failed completion {index}: "
                f"{result.get('status')} {result.get('error')}"
            )
        rewards, details = scored.setdefault(line.where, ([], []))
        rewards.append(float(result["reward"]))
        details.append({k: float(v) for k, v in (result.get("scores") or {}).items()})
    return scored


def _score_item(line: OfflineLine, prompt: str, completion: str) -> dict[str, Any]:
    item: dict[str, Any] = {"prompt": prompt, "completion": completion, "reference": line.reference}
    metadata = scoring_metadata({}, line.messages)
    if metadata:
        item["metadata"] = metadata
    return item


def hf_tokenizer(directory: Path) -> OfflineTokenizer:
    """The Hugging Face tokenizer in `directory`, tokenising as the actors do; with the model's limits
    when `directory` is a model directory (has config.json), so its poison lines are screened."""
    directory = Path(directory)
    limits = model_limits(directory) if (directory / "config.json").is_file() else None
    return OfflineTokenizer(load_tokenizer(directory), limits, str(directory))


def http_scorer(base_url: str, token: str | None = None) -> Score:
    """Score items through a reward server's `POST /v1/score`; a transport failure is an IngestError."""
    import httpx

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    client = httpx.Client(base_url=base_url, timeout=120, headers=headers)

    def score(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        try:
            response = client.post("/v1/score", json={"items": items})
            response.raise_for_status()
            return response.json()["results"]
        except (httpx.HTTPError, ValueError, KeyError) as error:
            raise IngestError(f"reward server {base_url}/v1/score: {error!r}") from None

    return score
