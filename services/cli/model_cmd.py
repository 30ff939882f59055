"""`tandem make-model` (build the tiny models from nothing) and `tandem generate` (sample with vLLM)."""

import argparse
import json
import sys
from pathlib import Path

from core.tinymodels import TOKENIZER_KINDS
from core.tinymodels.tasks import TASKS

MODEL_KINDS = ("policy", "reward", "nli")


def register(subparsers: argparse._SubParsersAction) -> None:
    make = subparsers.add_parser("make-model", help="build a tiny model from nothing (no model hub needed)")
    make.add_argument("--task", choices=TASKS, default="arithmetic", help="synthetic task (policy, reward)")
    make.add_argument("--kind", choices=MODEL_KINDS, default="policy", help="which model to build")
    make.add_argument("--out", required=True, type=Path, help="output directory (Hugging Face format)")
    make.add_argument("--seed", type=int, default=0)
    make.add_argument(
        "--tokenizer",
        choices=TOKENIZER_KINDS,
        default="char",
        help="policy tokenizer: char (one token per byte, the demo's) or bpe (byte-level BPE trained on"
        " the task, with BOS and a chat template)",
    )
    make.set_defaults(handler=make_model)

    generate = subparsers.add_parser("generate", help="sample completions from a model with vLLM")
    generate.add_argument("--model", required=True, type=Path, help="Hugging Face model directory")
    generate.add_argument(
        "--prompts",
        required=True,
        type=Path,
        help="prompt file (JSONL, .parquet, datasets folder) with `prompt` or chat `messages` "
        "(and `reference`)",
    )
    generate.add_argument("--limit", type=int, default=8, help="how many prompts to use")
    generate.add_argument("--n", type=int, default=4, help="samples per prompt")
    generate.add_argument("--temperature", type=float, default=1.0)
    generate.add_argument("--max-tokens", type=int, default=16)
    generate.add_argument("--seed", type=int, default=0)
    generate.set_defaults(handler=generate_samples)


def make_model(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} loss {task.fields[loss]:.3f}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, transient=False) as progress:
        bar = progress.add_task(f"{args.kind} ({args.task})", total=None, loss=float("nan"))

        def report(step: int, total: int, loss: float) -> None:
            progress.update(bar, completed=step, total=total, loss=loss)

        summary = _build(args, report)
    print(json.dumps(summary, indent=2))
    return 0


def _build(args: argparse.Namespace, report) -> dict:  # type: ignore[no-untyped-def]
    from dataclasses import asdict

    if args.kind == "policy":
        from core.tinymodels.policy import build_policy

        result = build_policy(
            args.task, args.out, seed=args.seed, progress=report, tokenizer_kind=args.tokenizer
        )
        return asdict(result)
    if args.tokenizer != "char":
        raise SystemExit(f"tandem make-model --kind {args.kind}: only --kind policy takes --tokenizer bpe")
    if args.kind == "reward":
        if args.task != "arithmetic":
            raise SystemExit("tandem make-model --kind reward: only --task arithmetic has a reward model")
        from core.tinymodels.reward_model import build_reward_model

        return {
            "kind": "reward",
            "out_dir": str(args.out),
            "held_out_pair_accuracy": build_reward_model(args.out, seed=args.seed),
        }
    from core.tinymodels.nli_model import build_nli_model

    return {
        "kind": "nli",
        "out_dir": str(args.out),
        "held_out_accuracy": build_nli_model(args.out, seed=args.seed),
    }


def generate_samples(args: argparse.Namespace) -> int:
    from actors.engine import GenerationEngine, PromptRequest, SamplingSettings
    from actors.rollout import prompt_text, render_prompt
    from core.prompts import PromptFileError, read_prompt_file
    from core.tokenization import ChatRenderer, ChatTemplateError, load_tokenizer

    # The actors' path: any prompt file format, chat prompts rendered once by the model's template.
    try:
        records = read_prompt_file(args.prompts)[: args.limit]
        renderer = ChatRenderer(load_tokenizer(args.model), args.model)
        prompts = [render_prompt(record, renderer) for record in records]
    except (PromptFileError, ChatTemplateError) as error:
        print(f"tandem generate: {error}", file=sys.stderr)
        return 2
    requests = [PromptRequest(r.prompt_id, p) for r, p in zip(records, prompts, strict=True)]
    engine = GenerationEngine(args.model, seed=args.seed)
    sampling = SamplingSettings(temperature=args.temperature, max_tokens=args.max_tokens, seed=args.seed)
    groups = engine.generate(requests, args.n, sampling)
    engine.close()
    correct = total = 0
    for record, prompt, group in zip(records, prompts, groups, strict=True):
        shown = ", ".join(repr(sample.completion_text) for sample in group)
        print(f"{prompt_text(prompt)!r:>24} -> {shown}   (reference {record.reference!r})")
        if record.reference is not None:
            correct += sum(sample.completion_text.strip() == record.reference for sample in group)
            total += len(group)
    if total:
        print(f"exact match: {correct}/{total} = {correct / total:.2f} (temperature {args.temperature})")
    return 0
