"""Sequence log-probabilities of ranked responses, the prompt computed once per preference.

DPO needs, for each response, the sum of log p(token) over its masked tokens, under the policy (with
gradients) and under the frozen reference. A preference's prompt and responses are laid out as one
prefix group (herd.model.shared_prefix): one row, the prompt once, each response attending to the
prompt and itself. Only the hidden states that predict masked tokens reach the output projection,
so the vocabulary-sized matmul runs on the tokens that count and nowhere else.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import torch

from herd.model import Transformer
from herd.model.shared_prefix import PrefixGroup, pack_prefix_groups
from herd.post.encoding import EncodedPreference
from herd.train.loss import autocast


def preference_token_logprobs(
    model: Transformer, preferences: Sequence[EncodedPreference], *, prefix_sharing: bool = True,
    max_len: int | None = None, device: torch.device | str = "cpu", autocast_dtype: torch.dtype | None = None,
) -> list[list[torch.Tensor]]:
    """Per preference, per response: log-probs [n_masked] of the response's masked tokens (differentiable).

    `prefix_sharing=False` puts every (prompt, response) pair in its own row (the plain layout); the
    numbers are the same to float rounding, the prompt is just computed once per response.
    """
    groups: list[PrefixGroup] = []
    owners: list[tuple[int, int]] = []  # (preference, first response) of each group
    for p, pref in enumerate(preferences):
        if prefix_sharing:
            groups.append(pref.group())
            owners.append((p, 0))
        else:
            for r, response in enumerate(pref.responses):
                groups.append(PrefixGroup(pref.prompt, [response]))
                owners.append((p, r))
    batch = pack_prefix_groups(groups, max_len=max_len, device=device)
    rows: list[int] = []
    cols: list[int] = []
    sizes: list[int] = []
    targets: list[int] = []
    for (p, first), spans in zip(owners, batch.spans):
        for b, span in enumerate(spans):
            mask = preferences[p].branch_masks[first + b]
            predicting = span.predicting_columns()
            picked = [i for i, keep in enumerate(mask) if keep]
            rows += [span.row] * len(picked)
            cols += [predicting[i] for i in picked]
            targets += [preferences[p].responses[first + b][i] for i in picked]
            sizes.append(len(picked))
    with autocast(torch.device(device), autocast_dtype):
        hidden = model.run_layers(model.embed(batch.tokens), batch.positions, batch.attention)
        selected = hidden[torch.as_tensor(rows, device=hidden.device), torch.as_tensor(cols, device=hidden.device)]
        logits = model.output(model.norm(selected))
    logp = torch.log_softmax(logits.float(), dim=-1)
    picked_logp = logp.gather(1, torch.as_tensor(targets, device=logp.device)[:, None]).squeeze(1)
    flat = list(torch.split(picked_logp, sizes))
    out: list[list[torch.Tensor]] = [[] for _ in preferences]
    for (p, _first), spans in zip(owners, batch.spans):
        for _ in spans:
            out[p].append(flat.pop(0))
    return out


def fingerprint_preferences(preferences: Sequence[EncodedPreference]) -> str:
    """sha256 of the token ids and masks (what the reference log-probs depend on, besides the weights)."""
    h = hashlib.sha256()
    for pref in preferences:
        h.update(np.asarray(pref.prompt, dtype=np.int64).tobytes() + b"|")
        for response, mask in zip(pref.responses, pref.branch_masks):
            h.update(np.asarray(response, dtype=np.int64).tobytes() + b"/")
            h.update(np.asarray(mask, dtype=np.bool_).tobytes() + b";")
    return h.hexdigest()


def fingerprint_weights(model: torch.nn.Module) -> str:
    """sha256 over the parameters' names, shapes, dtypes and bytes, in name order."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
