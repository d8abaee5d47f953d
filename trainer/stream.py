"""Online data, streamed: a data set never sits in memory.

Start-up reads the jsonl once and keeps, per conversation, only where its line starts and the hash of its prompt
(text and media bytes: the eval split groups by it). The draft vocab is counted from the training conversations'
answers (the generated token ids `regenerate` stores; conversations without them are rendered as text, without
their media). During training each process renders and processes only its own share of a step's conversations,
in DataLoader workers a few steps ahead: media are decoded there, and a step's processor outputs (pixel values,
audio features) are dropped once the step is done. Memory is flat in the data set's size (benchmarks/streaming.py).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Iterator

import torch

from .data import (Conversation, DataError, LoadReport, Tokenizer, answer_token_counts, encode_fitting, read_jsonl,
                   read_line)


@dataclass(frozen=True)
class Entry:
    """One conversation of the jsonl, as the index keeps it."""
    path: str
    offset: int
    where: str
    content_key: str


def index_jsonl(path, report: LoadReport, tok: Tokenizer) -> list[Entry]:
    """Every valid line's entry; bad lines (and media the target does not read) are reported (file:line, field,
    fix) and counted."""
    before = len(report.errors)
    entries = []
    for c in read_jsonl(path, report.errors):
        try:
            tok.check_media_kinds(c)
        except DataError as e:
            report.errors.append(e)
            continue
        entries.append(Entry(str(path), c.offset, c.where, c.prompt_key()))
    repeated = sum(1 for e in report.errors[before:] if e.keep is not None)
    report.read += len(entries) + len(report.errors) - before - repeated
    report.streamed = report.streamed or 0
    return entries


class _Encode(torch.utils.data.Dataset):
    """entries[i] -> (its samples, a LoadReport of what could not be used): runs in the DataLoader's workers."""

    def __init__(self, entries: list, tok: Tokenizer, max_length: int):
        self.entries, self.tok, self.max_length = entries, tok, max_length

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: int):
        e = self.entries[i]
        rep = LoadReport()
        try:
            conv: Conversation = read_line(e.path, e.offset, e.where)
            return encode_fitting(conv, self.tok, self.max_length, rep), rep
        except DataError as err:            # media that vanished or changed since the index was read
            rep.errors.append(err)
            return [], rep


def _first(batch):
    return batch[0]


class StreamedSamples:
    """The samples of index entries, encoded lazily (in `workers` processes; 0: in this one)."""

    def __init__(self, tok: Tokenizer, max_length: int, report: LoadReport, workers: int):
        self.tok, self.max_length, self.report, self.workers = tok, max_length, report, workers
        self._reported: set[str] = set()    # an entry encoded again (next epoch, each eval) is reported once

    def _loader(self, entries: list):
        kw = {"num_workers": self.workers}
        if self.workers:
            kw.update(prefetch_factor=4, persistent_workers=False)
        return torch.utils.data.DataLoader(_Encode(entries, self.tok, self.max_length), batch_size=1,
                                           shuffle=False, collate_fn=_first, **kw)

    def _merge(self, entry: Entry, rep: LoadReport, counted: bool) -> None:
        if entry.where in self._reported:
            return
        self._reported.add(entry.where)
        self.report.streamed = (self.report.streamed or 0) + 1
        self.report.errors += rep.errors
        self.report.too_long += rep.too_long
        self.report.truncated += rep.truncated
        if counted:
            self.report.kept += rep.kept

    def stream(self, entries: list[Entry]) -> Iterator[list]:
        """Per entry, in order: its samples (empty when it cannot be used; reported and counted once)."""
        for entry, (samples, rep) in zip(entries, self._loader(entries)):
            self._merge(entry, rep, counted=True)
            yield samples

    def token_frequencies(self, entries: list[Entry]) -> Counter:
        """The entries' loss-masked tokens, counted in one sequential read of their files."""
        wanted: dict[str, set[int]] = {}
        for e in entries:
            wanted.setdefault(e.path, set()).add(e.offset)
        total: Counter = Counter()
        for path, offsets in wanted.items():
            for conv in read_jsonl(path, []):
                if conv.offset in offsets:
                    try:
                        total.update(answer_token_counts(conv, self.tok))
                    except DataError:       # reported when the conversation is encoded for training
                        pass
        return total


def chunks(items: Iterable, n: int) -> Iterator[list]:
    chunk: list = []
    for x in items:
        chunk.append(x)
        if len(chunk) == n:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
