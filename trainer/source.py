"""Where a run's samples and target features come from, behind one interface: the live target (online: the
conversations are streamed from the jsonl (stream.py) and the target runs next to the draft) or a features folder
(offline: samples and features were stored by `eagle3-train dump-features`). The features folder is opened once.

A run's items are what the split, the data order and resume index: jsonl entries online, stored samples offline;
`stream(items)` turns them into samples, in order. Offline, it also reads their features ahead in a background
thread (a budget of twice the longest forward in tokens), so the next micro-batch's shard reads overlap this one's
compute; `batch` takes them from there."""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Iterator

import torch

from .batching import stack_features, target_inputs
from .data import DataError, LoadReport, Tokenizer, token_frequencies
from .fidelity import check_data, require_same_prompts, vllm_available
from .stream import StreamedSamples, index_jsonl
from .target import served_positions


def template_kwargs_of(cfg) -> dict | None:
    """--chat-template-kwargs JSON as a dict (a clear error for bad JSON)."""
    import json
    if not cfg.chat_template_kwargs:
        return None
    try:
        value = json.loads(cfg.chat_template_kwargs)
    except json.JSONDecodeError as e:
        raise SystemExit(f"--chat-template-kwargs: not JSON ({e.msg} at column {e.colno}): "
                         f"{cfg.chat_template_kwargs!r}") from None
    if not isinstance(value, dict):
        raise SystemExit(f"--chat-template-kwargs: expected a JSON object, got {cfg.chat_template_kwargs!r}")
    return value


class FeatureSource:
    def __init__(self, cfg, family, target_cfg: dict, device: torch.device, report: LoadReport, progress: bool):
        self.offline = cfg.features is not None
        self.draft_positions = family.draft_positions(cfg.vllm_runner)
        self.report = report
        self.bad_keys: set[str] = set()      # samples whose shard failed: reported and counted once
        if self.offline:
            from .features import FeatureStore
            self.store = FeatureStore(cfg.features)
            self.store.check_target(target_cfg, family)
            self.aux_ids = list(self.store.meta["aux_layer_ids"])
            self.train_items = self.store.samples(report.errors)
            report.read += len(self.train_items)
            report.kept += len(self.train_items)
            self.eval_items: list = []
            self._reader = ThreadPoolExecutor(1, thread_name_prefix="feature-read-ahead")
            self._ahead: dict[str, Future] = {}
            self.read_ahead_tokens = 2 * max(cfg.batch_tokens, cfg.max_length)
        else:
            from .target import Target
            self.aux_ids = list(family.aux_layer_ids(target_cfg, cfg.aux_layer_ids))
            template_kwargs = template_kwargs_of(cfg)
            tok = Tokenizer(cfg.target, family, cfg.chat_template, template_kwargs, engine=cfg.serve_engine)
            if cfg.render_check and cfg.serve_engine == "vllm" and vllm_available():
                results = check_data(cfg.target, cfg.data, family, cfg.render_check, cfg.chat_template,
                                     template_kwargs, tok=tok)
                require_same_prompts(results, f"{cfg.data} rendered for {cfg.target}")
            self.streamed = StreamedSamples(tok, cfg.max_length, report, cfg.data_workers)
            self.train_items = index_jsonl(cfg.data, report, tok)
            self.eval_items = index_jsonl(cfg.eval_data, report, tok) if cfg.eval_data else []
            dtype = torch.bfloat16 if device.type == "cuda" else torch.float32   # the target is frozen
            self.target = Target(cfg.target, dtype=dtype, device=str(device))

    def stream(self, items: list) -> Iterator[list]:
        """Per item, in order: its samples (online: encoded in DataLoader workers; empty when unusable)."""
        if self.offline:
            return self._read_ahead(items)
        return self.streamed.stream(items)

    def _read_ahead(self, items: list) -> Iterator[list]:
        queued, tokens = 0, 0             # items[:queued] are submitted; tokens: of the ones not yet yielded
        for i, s in enumerate(items):
            while queued < len(items) and (queued <= i or tokens + items[queued].num_tokens
                                           <= self.read_ahead_tokens):
                nxt = items[queued]
                if nxt.id not in self._ahead:
                    self._ahead[nxt.id] = self._reader.submit(self.store.load, nxt.id)
                tokens += nxt.num_tokens
                queued += 1
            tokens -= s.num_tokens
            yield [s]

    def samples(self, items: list) -> list:
        if self.offline:            # the stored samples themselves; their features are read by batch()
            return list(items)
        return [s for got in self.stream(items) for s in got]

    def token_frequencies(self, items: list):
        """How often each token is a training target (loss-masked positions), for the draft vocab."""
        if self.offline:
            return token_frequencies(items)
        return self.streamed.token_frequencies(items)

    def embed_and_head(self):
        if self.offline:
            return self.store.embed_weight(), self.store.lm_head_weight()
        return self.target.embed_weight(), self.target.lm_head_weight()

    def batch(self, samples: list):
        """(samples, their padded target features) for a micro-batch; samples whose feature shard is bad are
        dropped (reported and counted once); None if none is left."""
        if not self.offline:
            return samples, served_positions(self.target.features(target_inputs(samples), self.aux_ids),
                                             self.draft_positions)
        kept, feats = [], []
        for s in samples:
            ahead = self._ahead.pop(s.id, None)
            if s.id in self.bad_keys:
                continue
            try:
                feats.append(ahead.result() if ahead else self.store.load(s.id))
                kept.append(s)
            except DataError as e:
                self.bad_keys.add(s.id)
                self.report.errors.append(e)
                self.report.kept -= 1
        if not kept:
            return None
        return kept, served_positions(stack_features(feats, max(s.num_tokens for s in kept)), self.draft_positions)
