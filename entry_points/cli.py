"""``eagle3-train``: one console script, one subcommand per job. Each room declares its own subcommand where it can
(train: trainer/config.py's flags, regenerate, dump-features); this file only builds the parser and dispatches."""
from __future__ import annotations

import argparse
import sys

from eagle3_plugin.families import FAMILIES


def _doctor(args) -> int:
    from eagle3_plugin.doctor import run
    return run(engines=args.engine)


def _tiny(args) -> int:
    from eagle3_plugin.devtools.tiny import build_tiny_target
    out = build_tiny_target(args.family, args.output, overwrite=args.overwrite, seed=args.seed,
                            num_layers=args.num_layers, hidden_size=args.hidden_size,
                            pretrain_steps=args.pretrain_steps)
    print(f"tiny {args.family} target written to {out}")
    return 0


def _check(args) -> int:
    from eagle3_plugin.doctor import check_draft, check_rendering
    if not (args.draft or args.data):
        raise SystemExit("eagle3-train check: give a DRAFT folder, or --target T --data D for the rendering check")
    status = check_draft(args.draft, args.target) if args.draft else 0
    if args.data:
        if not args.target:
            raise SystemExit("eagle3-train check --data: give --target too (the model whose chat path is compared)")
        status = max(status, check_rendering(args.target, args.data, args.samples, args.chat_template,
                                             args.chat_template_kwargs))
    return status


def _train(args) -> int:
    from eagle3_plugin.trainer.config import from_args
    from eagle3_plugin.trainer.loop import train
    train(from_args(args))
    return 0


def _bench(args) -> int:
    from eagle3_plugin.bench import BenchConfig, lossless_failures, run_bench
    if args.engine in ("vllm", "vllm-serve") and not (args.target or args.url or args.baseline_url):
        raise SystemExit("eagle3-train bench: give --target (and --draft), or --url/--baseline-url")
    rep = run_bench(BenchConfig(
        engine=args.engine, target=args.target, draft=args.draft, data=args.data, dataset=args.dataset,
        num_prompts=args.num_prompts, output_len=args.output_len, temperature=args.temperature,
        num_spec_tokens=args.num_spec_tokens, max_num_seqs=args.max_num_seqs, tp=args.tp, seed=args.seed,
        repeats=args.repeats, max_model_len=args.max_model_len, url=args.url, baseline_url=args.baseline_url,
        steps=args.steps, topk=args.topk, draft_tokens=args.draft_tokens, server_cmd=args.server_cmd,
        extra_args=args.server_arg or [], output=args.output, plot=not args.no_plot))
    failures = lossless_failures(rep)
    for message in failures:     # speculative decoding must not change greedy outputs: a failed run
        print(f"eagle3-train bench: {message}", file=sys.stderr)
    if failures:
        print(f"eagle3-train bench: exit status 1: {len(failures)} speculative run(s) not lossless "
              f"(details in {args.output}/report.json, runs[].first_mismatch)", file=sys.stderr)
    return 1 if failures else 0


def _demo(args) -> int:
    from eagle3_plugin.devtools.demo import run
    fams = tuple(FAMILIES) if args.families == ["all"] else tuple(args.families)
    return run(args.workdir, fams, k=args.k)


def _add_train(sub) -> None:
    from eagle3_plugin.trainer.config import add_arguments
    tr = sub.add_parser("train", help="train an EAGLE-3 draft (online from a live target, or offline from features)",
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        description="Online: --data conversations.jsonl (the target runs alongside the draft). "
                                    "Offline: --features DIR from `eagle3-train dump-features`. The output folder "
                                    "is a draft vLLM and SGLang load directly; re-running the same command resumes "
                                    "it. Several GPUs: torchrun --nproc-per-node N --no-python eagle3-train train ...",
                        epilog="a recipe file holds any of the fields above, e.g. recipe.yaml:\n"
                               "  lr: 0.001\n  ttt_steps: 7\n  draft_vocab_size: 32000\n"
                               "then: eagle3-train train --config recipe.yaml --target T --data D -o OUT")
    add_arguments(tr)
    tr.set_defaults(func=_train)


def _add_bench(sub) -> None:
    b = sub.add_parser(
        "bench", help="acceptance length, per-position acceptance, tokens/s, latency and speedup, with vs without "
                      "the draft, side by side (vLLM offline, vllm serve, SGLang); sweeps",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Runs the same prompts without and with the EAGLE-3 draft, one engine at a time, and writes "
                    "OUTPUT/report.json, report.md and report.png (and report-tree.png for an SGLang tree sweep).",
        epilog="examples:\n"
               "  eagle3-train bench --engine vllm --target T --draft D --num-spec-tokens 1 2 3 4\n"
               "  eagle3-train bench --engine vllm-serve --target T --draft D --data prompts.jsonl\n"
               "  eagle3-train bench --engine vllm-serve --url http://host:8000 --baseline-url http://host:8001\n"
               "  eagle3-train bench --engine sglang --target T --draft D --steps 3 5 8 --topk 1 2 4 "
               "--draft-tokens 8 16 32\n"
               "  eagle3-train bench --engine sglang --url http://host:30000   (a running server)")
    b.add_argument("--engine", choices=["vllm", "vllm-serve", "sglang"], default="vllm",
                   help="vllm: offline LLM; vllm-serve / sglang: OpenAI-compatible HTTP servers (default: vllm)")
    b.add_argument("--target", help="target model folder or Hub id (launches engines)")
    b.add_argument("--draft", help="EAGLE-3 draft directory (without it: baseline only)")
    b.add_argument("--data", help="prompts: a conversations jsonl (default: the bundled fixtures of the target's "
                                  "modality)")
    b.add_argument("--dataset", help="a named dataset instead: mt_bench, gsm8k, humaneval, alpaca, textvqa, mmmu, "
                                     "mmstar, omnidocbench, librispeech (needs `datasets` and the hub)")
    b.add_argument("--num-prompts", type=int, default=16)
    b.add_argument("--output-len", type=int, default=128, help="max new tokens per request")
    b.add_argument("--temperature", type=float, default=0.0,
                   help="0 = greedy: also checks losslessness (exit status 1 when a speculative run's outputs "
                        "differ from the baseline's)")
    b.add_argument("--num-spec-tokens", type=int, nargs="+", default=[3],
                   help="vLLM num_speculative_tokens; several values = a sweep")
    b.add_argument("--steps", type=int, nargs="+", default=[5], help="SGLang --speculative-num-steps (sweep)")
    b.add_argument("--topk", type=int, nargs="+", default=[4], help="SGLang --speculative-eagle-topk (sweep)")
    b.add_argument("--draft-tokens", type=int, nargs="+", default=[16],
                   help="SGLang --speculative-num-draft-tokens (sweep)")
    b.add_argument("--max-num-seqs", type=int, nargs="+", default=[1],
                   help="concurrent requests (and the engine's batch limit); several values = a sweep, each "
                        "speculative run compared with the baseline at its own concurrency")
    b.add_argument("--tp", type=int, default=1, help="tensor parallel size")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--repeats", type=int, default=1, help="time each configuration N times, keep the fastest")
    b.add_argument("--max-model-len", type=int, default=2048)
    b.add_argument("--url", help="a running server WITH the draft (skips launching)")
    b.add_argument("--baseline-url", help="a running server WITHOUT the draft")
    b.add_argument("--server-cmd", help="command that starts an SGLang server (default: python -m "
                                        "sglang.launch_server)")
    b.add_argument("--server-arg", action="append", help="extra argument for every launched server (repeatable)")
    b.add_argument("--output", "-o", default="bench-report", help="report directory")
    b.add_argument("--no-plot", action="store_true")
    b.set_defaults(func=_bench)


def build_parser() -> argparse.ArgumentParser:
    from eagle3_plugin.trainer import features, regenerate
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
    t.add_argument("family", choices=list(FAMILIES))
    t.add_argument("--output", "-o", required=True, help="folder to write (missing, empty, or a tiny target)")
    t.add_argument("--overwrite", action="store_true", help="replace a tiny target written there before")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--num-layers", type=int, default=8, help="text decoder layers (>= 8 recommended)")
    t.add_argument("--hidden-size", type=int, default=128)
    t.add_argument("--pretrain-steps", type=int, default=0,
                   help="train the text stack on the bundled corpus so the target writes structured text")
    t.set_defaults(func=_tiny)

    c = sub.add_parser("check", help="validate a draft directory (and its fit to a target); with --data, compare "
                                     "the trainer's prompts with vLLM's chat rendering token by token")
    c.add_argument("draft", nargs="?", help="draft directory (config.json + model.safetensors)")
    c.add_argument("--target", help="target model folder or Hub id, to check vocab, hidden size and aux layer ids")
    c.add_argument("--data", help="conversations jsonl: render them through the trainer and through vLLM's chat "
                                  "path and report the first token where they differ")
    c.add_argument("--samples", type=int, default=16, help="conversations compared with --data")
    c.add_argument("--chat-template", help="the chat template you serve with, if not the target's own")
    c.add_argument("--chat-template-kwargs", help="JSON of template variables, e.g. '{\"enable_thinking\": false}'")
    c.set_defaults(func=_check)

    _add_train(sub)
    regenerate.configure_parser(sub)
    features.configure_parser(sub)
    _add_bench(sub)

    m = sub.add_parser("demo", help="tiny target -> regenerate -> train -> vLLM with/without the draft: lossless, AL, speed")
    m.add_argument("--workdir", default="eagle3-demo", help="where targets, data and drafts are written")
    from eagle3_plugin.devtools.demo import DEFAULT_FAMILIES
    m.add_argument("--families", nargs="+", default=list(DEFAULT_FAMILIES), choices=[*FAMILIES, "all"])
    m.add_argument("--k", type=int, default=3, help="num_speculative_tokens")
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
