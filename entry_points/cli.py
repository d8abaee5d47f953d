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


def _train(args) -> int:
    from eagle3_plugin.trainer.loop import TrainConfig, train
    if not (args.data or args.features):
        raise SystemExit("eagle3-train train: give --data JSONL (online) or --features DIR (offline)")
    cfg = TrainConfig(target=args.target, output=args.output, data=args.data, features=args.features,
                      eval_data=args.eval_data, max_steps=args.max_steps, num_epochs=args.num_epochs,
                      max_length=args.max_length, lr=args.lr, batch_size=args.batch_size, ttt_steps=args.ttt_steps,
                      ttt_decay=args.ttt_decay, draft_vocab_size=args.draft_vocab_size, seed=args.seed,
                      warmup_steps=args.warmup_steps, eval_every=args.eval_every, save_every=args.save_every,
                      lm_head_init=args.lm_head_init, wandb_project=args.wandb_project,
                      aux_layer_ids=args.aux_layer_ids, progress=not args.no_progress, device=args.device,
                      deepspeed=args.deepspeed)
    train(cfg)
    return 0


def _dump(args) -> int:
    import json
    from pathlib import Path
    from eagle3_plugin.families import family_for_target
    from eagle3_plugin.trainer.data import LoadReport, Tokenizer, load_samples
    from eagle3_plugin.trainer.features import dump_features
    tcfg = json.loads((Path(args.target) / "config.json").read_text())
    fam = family_for_target(tcfg)
    report = LoadReport()
    samples = load_samples(args.data, Tokenizer(args.target, fam), args.max_length, report)
    for e in report.errors:
        print(f"warning: {e}")
    print(f"data: {report.summary()}")
    aux = args.aux_layer_ids or list(fam.default_aux_layer_ids(tcfg))
    dump_features(args.target, samples, args.output, aux)
    return 0


def _regenerate(args) -> int:
    from eagle3_plugin.trainer.regenerate import RegenConfig, regenerate
    c = regenerate(RegenConfig(input=args.input, output=args.output, base_url=args.base_url, model=args.model,
                               concurrency=args.concurrency, max_tokens=args.max_tokens, temperature=args.temperature),
                   progress=not args.no_progress)
    return 1 if c["failed"] else 0


def _bench(args) -> int:
    from eagle3_plugin.bench import BenchConfig, run_bench
    if args.engine in ("vllm", "vllm-serve") and not (args.target or args.url or args.baseline_url):
        raise SystemExit("eagle3-train bench: give --target (and --draft), or --url/--baseline-url")
    run_bench(BenchConfig(
        engine=args.engine, target=args.target, draft=args.draft, data=args.data, dataset=args.dataset,
        num_prompts=args.num_prompts, output_len=args.output_len, temperature=args.temperature,
        num_spec_tokens=args.num_spec_tokens, max_num_seqs=args.max_num_seqs, tp=args.tp, seed=args.seed,
        repeats=args.repeats, max_model_len=args.max_model_len, url=args.url, baseline_url=args.baseline_url,
        steps=args.steps, topk=args.topk, draft_tokens=args.draft_tokens, server_cmd=args.server_cmd,
        extra_args=args.server_arg or [], output=args.output, plot=not args.no_plot))
    return 0


def _demo(args) -> int:
    from eagle3_plugin.demo import run
    fams = ("text", "qwen3_vl", "hunyuan_vl", "qwen2_audio") if args.families == ["all"] else tuple(args.families)
    return run(args.workdir, fams, k=args.k)


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
    tr = sub.add_parser("train", help="train an EAGLE-3 draft (online from a live target, or offline from features)",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                        description="Online: --data conversations.jsonl (the target runs alongside the draft). "
                                    "Offline: --features DIR from `eagle3-train dump-features`. The output directory "
                                    "is a draft vLLM and SGLang load directly; re-running resumes from its state. "
                                    "Several GPUs: torchrun --nproc-per-node N --no-python eagle3-train train ...")
    tr.add_argument("--target", required=True, help="target model directory (HF format)")
    tr.add_argument("--data", help="training conversations (jsonl, seed format)")
    tr.add_argument("--features", help="dumped target features (offline training)")
    tr.add_argument("--eval-data", help="held-out conversations (default: 5%% of --data)")
    tr.add_argument("--output", "-o", required=True, help="draft directory to write")
    tr.add_argument("--max-steps", type=int, default=0, help="optimizer steps (0: --num-epochs over the data)")
    tr.add_argument("--num-epochs", type=int, default=1)
    tr.add_argument("--max-length", type=int, default=2048, help="tokens per conversation (media never cut)")
    tr.add_argument("--lr", type=float, default=1e-3)
    tr.add_argument("--warmup-steps", type=int, default=20)
    tr.add_argument("--batch-size", type=int, default=1, help="conversations per optimizer step")
    tr.add_argument("--ttt-steps", type=int, default=7, help="training-time-test unroll length")
    tr.add_argument("--ttt-decay", type=float, default=0.8, help="loss weight decay per unroll step")
    tr.add_argument("--draft-vocab-size", type=int, default=32000)
    tr.add_argument("--lm-head-init", choices=["target", "random"], default="target",
                    help="start the draft head from the target's lm_head rows, or from random")
    tr.add_argument("--aux-layer-ids", type=int, nargs=3, help="target layers feeding the draft (default: family)")
    tr.add_argument("--eval-every", type=int, default=100)
    tr.add_argument("--save-every", type=int, default=100)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--wandb-project", help="also log to Weights & Biases")
    tr.add_argument("--device", default="auto", help="auto (cuda:LOCAL_RANK if available), cuda or cpu")
    tr.add_argument("--deepspeed", metavar="zero1|zero2|CONFIG.json",
                    help="DeepSpeed ZeRO for the draft's optimizer state and gradients (run under torchrun or "
                         "deepspeed; --batch-size must divide by the number of processes)")
    tr.add_argument("--no-progress", action="store_true")
    tr.set_defaults(func=_train)

    rg = sub.add_parser("regenerate", help="rewrite assistant turns with the target through an OpenAI-compatible server",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                        description="Start the target first, e.g. `vllm serve TARGET`. Resumable; bad lines and failed "
                                    "requests go to OUTPUT.errors.jsonl.")
    rg.add_argument("--input", "-i", required=True, help="conversations jsonl (seed format)")
    rg.add_argument("--output", "-o", required=True, help="jsonl to append regenerated conversations to")
    rg.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
    rg.add_argument("--model", help="served model name (default: the server's first model)")
    rg.add_argument("--concurrency", type=int, default=8)
    rg.add_argument("--max-tokens", type=int, default=512)
    rg.add_argument("--temperature", type=float, default=0.0)
    rg.add_argument("--no-progress", action="store_true")
    rg.set_defaults(func=_regenerate)

    df = sub.add_parser("dump-features", help="run the target once over the data and store the draft's features",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    df.add_argument("--target", required=True)
    df.add_argument("--data", required=True)
    df.add_argument("--output", "-o", required=True, help="features directory (resumable)")
    df.add_argument("--max-length", type=int, default=2048)
    df.add_argument("--aux-layer-ids", type=int, nargs=3)
    df.set_defaults(func=_dump)

    b = sub.add_parser(
        "bench", help="acceptance length, per-position acceptance, tokens/s, latency and speedup, with vs without "
                      "the draft, side by side (vLLM offline, vllm serve, SGLang); sweeps",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Runs the same prompts without and with the EAGLE-3 draft, one engine at a time, and writes "
                    "OUTPUT/report.json, report.md and report.png.",
        epilog="examples:\n"
               "  eagle3-train bench --engine vllm --target T --draft D --num-spec-tokens 1 2 3 4\n"
               "  eagle3-train bench --engine vllm-serve --target T --draft D --data prompts.jsonl\n"
               "  eagle3-train bench --engine vllm-serve --url http://host:8000 --baseline-url http://host:8001\n"
               "  eagle3-train bench --engine sglang --target T --draft D --steps 3 5 8 --topk 1 2 4 "
               "--draft-tokens 8 16 32\n"
               "  eagle3-train bench --engine sglang --url http://host:30000   (a running server)")
    b.add_argument("--engine", choices=["vllm", "vllm-serve", "sglang"], default="vllm",
                   help="vllm: offline LLM; vllm-serve / sglang: OpenAI-compatible HTTP servers (default: vllm)")
    b.add_argument("--target", help="target model directory (launches engines)")
    b.add_argument("--draft", help="EAGLE-3 draft directory (without it: baseline only)")
    b.add_argument("--data", help="prompts: a conversations jsonl (default: the bundled fixtures of the target's "
                                  "modality)")
    b.add_argument("--dataset", help="a named dataset instead: mt_bench, gsm8k, humaneval, alpaca, textvqa, mmmu, "
                                     "mmstar, omnidocbench, librispeech (needs `datasets` and the hub)")
    b.add_argument("--num-prompts", type=int, default=16)
    b.add_argument("--output-len", type=int, default=128, help="max new tokens per request")
    b.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (also checks losslessness)")
    b.add_argument("--num-spec-tokens", type=int, nargs="+", default=[3],
                   help="vLLM num_speculative_tokens; several values = a sweep")
    b.add_argument("--steps", type=int, nargs="+", default=[5], help="SGLang --speculative-num-steps (sweep)")
    b.add_argument("--topk", type=int, nargs="+", default=[4], help="SGLang --speculative-eagle-topk (sweep)")
    b.add_argument("--draft-tokens", type=int, nargs="+", default=[16],
                   help="SGLang --speculative-num-draft-tokens (sweep)")
    b.add_argument("--max-num-seqs", type=int, default=1, help="concurrent requests (and engine batch limit)")
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

    m = sub.add_parser("demo", help="tiny target -> regenerate -> train -> vLLM with/without the draft: lossless, AL, speed")
    m.add_argument("--workdir", default="eagle3-demo", help="where targets, data and drafts are written")
    m.add_argument("--families", nargs="+", default=["text", "qwen3_vl"],
                   choices=["text", "qwen3_vl", "hunyuan_vl", "qwen2_audio", "all"])
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
