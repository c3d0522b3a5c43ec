"""``python -m seam_lightning.eval <command>``: evaluate reward models and policies, one JSON result per run.

    rm-accuracy   Q_RM: preference accuracy of a reward model on held-out pairs
    gold-reward   judge-free Q_PM: a gold reward model's mean reward of a policy's responses
    judge         Q_PM: an LLM judge's mean rating (1-10) of a policy's responses
    match-rate    how often the RM prefers, of two policies' responses, the one the reference prefers

Each writes ``--output`` (atomically) and prints a one-line summary.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

import torch

from seam_lightning.eval.commands import COMMANDS
from seam_lightning.files import write_json
from seam_lightning.llm.chat import ChatBackendError


def _common(p: argparse.ArgumentParser, data: str, generates: bool) -> None:
    p.add_argument("--data", default=data, help=f"JSONL/Parquet file, datasets name or demo://<split> (default {data})")
    p.add_argument("--split", default="train", help="split of a datasets source (default train)")
    p.add_argument("--fields", default=None, help="field names in the data, e.g. instruction=prompt,chosen=good")
    p.add_argument("--limit", type=int, default=None, help="use the first N records only")
    p.add_argument("--output", required=True, help="the JSON result file to write")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                   help="precision of the evaluated models' weights")
    p.add_argument("--attn-implementation", default="sdpa", choices=["sdpa", "eager", "flash_attention_2"],
                   help="attention of the evaluated models (default sdpa)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-instruction-tokens", type=int, default=128)
    p.add_argument("--max-response-tokens", type=int, default=192, help="limit on a response the RM scores")
    p.add_argument("--prompt-template", default=None,
                   help="a plain prompt template with {instruction}, as the models were trained with "
                        "(e.g. 'Question: {instruction}\\n\\nAnswer: '); default: the chat template")
    p.add_argument("--system-prompt", default=None, help="a system turn before every prompt (default: none)")
    if generates:
        p.add_argument("--max-new-tokens", type=int, default=64, help="limit on a generated response")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="hide progress bars")


def _judge_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("judge", "an OpenAI-compatible endpoint (--model, --base-url) or a local model")
    g.add_argument("--model", default=None, help="judge model name at the endpoint, e.g. gpt-4o")
    g.add_argument("--base-url", default=None, help="endpoint, e.g. http://localhost:8000/v1 (default OpenAI's)")
    g.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the key")
    g.add_argument("--local-model", default=None, help="a local judge: folder or bundled:SmolLM2-135M-Instruct")
    g.add_argument("--cache", default=None, help="JSONL file of cached judge replies (default: the package cache)")
    g.add_argument("--judge-template", default=None, help="file with a judge prompt using {question} and {answer}")
    g.add_argument("--judge-max-tokens", type=int, default=512)
    g.add_argument("--judge-workers", type=int, default=4, help="judge requests in flight at once")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m seam_lightning.eval", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")

    p = sub.add_parser("rm-accuracy", help="Q_RM: preference accuracy of a reward model")
    p.add_argument("--reward-model", required=True, help="folder, export or bundled:<name>")
    _common(p, "demo://preference_val", generates=False)

    p = sub.add_parser("gold-reward", help="mean gold-RM reward of a policy's responses (judge-free Q_PM)")
    p.add_argument("--policy", required=True)
    p.add_argument("--gold-reward-model", required=True)
    _common(p, "demo://rl_val", generates=True)

    p = sub.add_parser("judge", help="mean LLM-judge rating of a policy's responses (Q_PM)")
    p.add_argument("--policy", required=True)
    _common(p, "demo://rl_val", generates=True)
    _judge_options(p)

    p = sub.add_parser("match-rate", help="RM agreement with a reference on two policies' responses (paper §4.2)")
    p.add_argument("--policy-a", required=True)
    p.add_argument("--policy-b", required=True)
    p.add_argument("--reward-model", required=True)
    p.add_argument("--gold-reward-model", default=None, help="the reference; else a judge (options below)")
    _common(p, "demo://rl_val", generates=True)
    _judge_options(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit status (0 on success, 2 on a bad argument or bad data)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for name in ("limit", "batch_size", "max_new_tokens", "max_instruction_tokens", "max_response_tokens"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    start = time.monotonic()
    try:
        result, summary = COMMANDS[args.command](args)
    except (ValueError, OSError, ChatBackendError) as e:  # DataError is a ValueError: bad data, options, paths
        print(f"{parser.prog} {args.command}: error: {e}", file=sys.stderr)
        return 2
    settings = {k: v for k, v in vars(args).items() if k not in ("command", "progress")}
    payload = {"command": args.command, **result, "seconds": round(time.monotonic() - start, 3), "settings": settings}
    path = write_json(args.output, payload)
    print(f"{summary} -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
