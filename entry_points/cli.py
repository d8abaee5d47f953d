"""``eagle3-train``: one console script, one subcommand per job. The subcommands live in the package; this file
only parses arguments and dispatches."""
from __future__ import annotations

import argparse
import sys


def _doctor(args) -> int:
    from eagle3_plugin.doctor import run
    return run(engines=args.engine)


def _tiny(args) -> int:
    from eagle3_plugin.trainer.tiny import build_tiny_target
    out = build_tiny_target(args.family, args.output, seed=args.seed, num_layers=args.num_layers,
                            hidden_size=args.hidden_size, pretrain_steps=args.pretrain_steps)
    print(f"tiny {args.family} target written to {out}")
    return 0


def _check(args) -> int:
    from eagle3_plugin.doctor import check_draft
    return check_draft(args.draft, args.target)


def _demo(args) -> int:
    from eagle3_plugin.demo import run
    return run(args.workdir)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="eagle3-train",
        description="Train EAGLE-3 drafts that vLLM and SGLang load directly, and check the engines can serve them.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run `eagle3-train <command> --help` for the options of each command.")
    sub = p.add_subparsers(dest="command", required=True, metavar="<command>")

    d = sub.add_parser("doctor", help="engine versions found, what the plugin registers in each, and why not")
    d.add_argument("--engine", choices=["vllm", "sglang"], action="append",
                   help="only this engine (repeatable; default: both)")
    d.set_defaults(func=_doctor)

    t = sub.add_parser("tiny", help="build a tiny random target (tokenizer, processor, chat template) offline")
    t.add_argument("family", choices=["text", "qwen3_vl", "hunyuan_vl", "qwen2_audio"])
    t.add_argument("--output", "-o", required=True, help="directory to write (replaced atomically)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--num-layers", type=int, default=8, help="text decoder layers (>= 8 recommended)")
    t.add_argument("--hidden-size", type=int, default=128)
    t.add_argument("--pretrain-steps", type=int, default=0,
                   help="train the text stack on the bundled corpus so the target writes structured text")
    t.set_defaults(func=_tiny)

    c = sub.add_parser("check", help="validate a draft directory (and its fit to a target)")
    c.add_argument("draft", help="draft directory (config.json + model.safetensors)")
    c.add_argument("--target", help="target model directory, to check vocab, hidden size and aux layer ids")
    c.set_defaults(func=_check)
    m = sub.add_parser("demo", help="tiny target -> EAGLE-3 draft -> vLLM with and without it: lossless, AL, speed")
    m.add_argument("--workdir", default="eagle3-demo", help="where targets and drafts are written")
    m.set_defaults(func=_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
