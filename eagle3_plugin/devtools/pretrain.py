"""Give a tiny target a language: a short causal-LM run of its text stack on the bundled corpus.

A random target's greedy text is noise that no draft can predict, so acceptance length would say nothing about a
trainer. A few hundred steps on the corpus make the target write structured English-like text, like a real model.
"""
from __future__ import annotations

import torch


def pretrain_text_stack(model, tokenizer, spec, lr: float = 3e-3, batch: int = 16) -> float:
    from eagle3_plugin.fixtures import corpus_text
    ids = torch.tensor(tokenizer(corpus_text(), add_special_tokens=False)["input_ids"], dtype=torch.long)
    L = spec.pretrain_seq_len
    g = torch.Generator().manual_seed(spec.seed)
    params = [p for n, p in model.named_parameters() if not any(t in n for t in ("visual", "vit", "audio_tower",
                                                                                  "vision", "multi_modal"))]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0, betas=(0.9, 0.95))
    model.train()
    loss = torch.tensor(0.0)
    for step in range(spec.pretrain_steps):
        for gr in opt.param_groups:
            gr["lr"] = lr * min(1.0, (step + 1) / 20) * (0.1 + 0.9 * (1 - step / spec.pretrain_steps))
        starts = torch.randint(0, ids.numel() - L - 1, (batch,), generator=g)
        x = torch.stack([ids[s:s + L] for s in starts.tolist()])
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
    model.eval()
    return float(loss.detach())
