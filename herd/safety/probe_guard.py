"""herd's input guard: linear probes on SmolLM2-135M-Instruct's hidden states.

Why a probe and not a fine-tune: on a 2-core CPU a probe trains in seconds once the features exist, it
leaves the base model untouched (the guard can share the served model's weights), and a 135M model
fine-tuned on ~2,000 prompts overfits its wording while its hidden states already separate requests by
intent. Why not the Llama Guard prompt as the probe's input: the 250-token category preamble is the same
for every prompt and would multiply the CPU cost ~6x; the probe reads the conversation itself.

Features: the conversation in the model's chat format with the generation prompt (the state the model
is in when it is about to answer), the mean hidden state over its tokens at a few layers and the final
normed state at the last token, standardised. Heads: one logistic regression for unsafe vs safe
(P(unsafe) is the guard's score) and one-vs-rest heads for the S-codes seen in training. The verdict is
written as Llama Guard writes it (`safe`, or `unsafe` and the codes whose head says so, at least the most
likely one), so decoding is constrained to the valid outputs by construction and
`herd.safety.guard_prompt.parse_guard_output` reads it back.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from herd.safety.guard_prompt import GuardVerdict, parse_guard_output
from herd.safety.taxonomy import CODES

LAYERS = (15, 22, 30)


def _logistic(x: torch.Tensor, y: torch.Tensor, l2: float, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Class-balanced, L2-regularised logistic regression (full batch, L-BFGS)."""
    pos = y.mean().clamp(1e-6, 1 - 1e-6)
    sample_weight = torch.where(y > 0, 0.5 / pos, 0.5 / (1 - pos))
    w = torch.zeros(x.shape[1], requires_grad=True)
    b = torch.zeros((), requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = (torch.nn.functional.binary_cross_entropy_with_logits(x @ w + b, y, reduction="none")
                * sample_weight).mean() + l2 * w.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


def _is_response(conversation: Sequence[Any] | str) -> bool:
    """True when the conversation ends with the assistant's turn (what the output guard judges)."""
    if isinstance(conversation, str) or not conversation:
        return False
    last = conversation[-1]
    return (last.get("role") if isinstance(last, dict) else getattr(last, "role", None)) == "assistant"


class ProbeGuard:
    def __init__(self, loaded: Any, layers: Sequence[int] = LAYERS, max_tokens: int = 256, batch_size: int = 16,
                 quantization: str | None = None) -> None:
        n_layers = loaded.config.n_layers
        if any(not 1 <= layer <= n_layers for layer in layers):
            raise ValueError(f"probe layers must be within 1..{n_layers}, got {list(layers)}")
        self.loaded, self.layers = loaded, tuple(layers)
        self.max_tokens, self.batch_size = max_tokens, batch_size
        # "int8" (or "fp8", "int4"): the features come from the engine's quantized copy of the model
        # (herd.infer.prepare.prepare_for_inference); the heads are the same
        self.quantization = quantization
        self.mean = self.std = None  # feature standardisation
        self.unsafe_head: tuple[torch.Tensor, torch.Tensor] | None = None
        self.category_heads: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        # judges a conversation that ends with the assistant's answer (the output guard), when trained
        self.response_head: tuple[torch.Tensor, torch.Tensor] | None = None

    # ----- features
    def _ids(self, conversation: Sequence[Any]) -> list[int]:
        from herd.tokenizer.chat import as_message

        messages = [as_message(m) for m in conversation]
        fmt = self.loaded.chat_format
        ids = fmt.encode_dialog(messages, add_generation_prompt=messages[-1].role == "user").tokens
        return ids[-self.max_tokens:]

    @torch.inference_mode()
    def features(self, conversations: Sequence[Sequence[Any] | str]) -> torch.Tensor:
        """[N, (len(layers) + 1) * dim] features; a str is one user message."""
        from herd.model.rope import rope_cos_sin
        from herd.model.transformer import CAUSAL

        model = self.loaded.model
        if self.quantization is not None:
            from herd.infer.prepare import prepare_for_inference

            model = prepare_for_inference(model, quantization=self.quantization)
        encoded = [self._ids([{"role": "user", "content": c}] if isinstance(c, str) else c) for c in conversations]
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        rows: list[torch.Tensor | None] = [None] * len(encoded)
        device = next(model.parameters()).device
        for start in range(0, len(order), self.batch_size):
            batch = order[start:start + self.batch_size]
            width = max(len(encoded[i]) for i in batch)
            tokens = torch.zeros(len(batch), width, dtype=torch.long, device=device)
            for r, i in enumerate(batch):  # right padding: a causal model's real positions never see it
                tokens[r, : len(encoded[i])] = torch.tensor(encoded[i], device=device)
            h = model.embed(tokens)
            cos, sin = rope_cos_sin(torch.arange(width, device=device), model.inv_freq)
            kept = {}
            for number, block in enumerate(model.blocks(), 1):
                h = block(h, cos, sin, CAUSAL)
                if number in self.layers:
                    kept[number] = h
            for r, i in enumerate(batch):
                n = len(encoded[i])
                parts = [kept[layer][r, :n].float().mean(0) for layer in self.layers]
                parts.append(model.norm(h[r, n - 1]).float())
                rows[i] = torch.cat(parts).cpu()
        return torch.stack(rows)  # type: ignore[arg-type]

    # ----- training
    def fit_features(self, x: torch.Tensor, unsafe: Sequence[bool], categories: Sequence[Iterable[str]],
                     l2: float = 1e-3, steps: int = 200) -> ProbeGuard:
        y = torch.tensor([float(u) for u in unsafe])
        if y.min() == y.max():
            raise ValueError("the guard needs both unsafe and safe training examples")
        self.mean, self.std = x.mean(0), x.std(0).clamp_min(1e-6)
        z = (x - self.mean) / self.std
        self.unsafe_head = _logistic(z, y, l2, steps)
        unsafe_rows = [i for i, u in enumerate(unsafe) if u]
        cats = [set(categories[i]) for i in unsafe_rows]
        self.category_heads = {}
        for code in CODES:
            labels = torch.tensor([float(code in c) for c in cats])
            if 0 < labels.sum() < len(labels):
                self.category_heads[code] = _logistic(z[unsafe_rows], labels, l2, steps)
        return self

    def fit(self, examples: Sequence[Any], l2: float = 1e-3, steps: int = 200) -> ProbeGuard:
        """Train on `herd.safety.guard_data.GuardExample`s."""
        return self.fit_features(self.features([e.text for e in examples]), [e.unsafe for e in examples],
                                 [e.categories for e in examples], l2, steps)

    def fit_responses(self, conversations: Sequence[Sequence[Any]], harmful: Sequence[bool], l2: float = 1e-2,
                      steps: int = 200) -> ProbeGuard:
        """Train the response head on (request, answer) conversations labelled harmful or not, on the same
        standardised features (fit the prompt heads first). Without it, an answer is judged by the prompt
        head, which learned what harmful requests look like, not harmful answers."""
        if not all(_is_response(c) for c in conversations):
            raise ValueError("fit_responses needs conversations that end with an assistant turn")
        y = torch.tensor([float(h) for h in harmful])
        if len(y) != len(conversations) or y.min() == y.max():
            raise ValueError("fit_responses needs one label per conversation, both harmful and harmless")
        self.response_head = _logistic(self._z(self.features(conversations)), y, l2, steps)
        return self

    # ----- inference
    def _z(self, x: torch.Tensor) -> torch.Tensor:
        if self.unsafe_head is None or self.mean is None or self.std is None:
            raise RuntimeError("the guard is not trained: call fit() or load()")
        return (x - self.mean) / self.std

    def scores_from_features(self, x: torch.Tensor, responses: Sequence[bool] | None = None) -> list[float]:
        """P(unsafe) per row; rows flagged in `responses` (the conversation ends with an answer) are read
        by the response head when there is one."""
        z = self._z(x)
        w, b = self.unsafe_head  # type: ignore[misc]
        scores = torch.sigmoid(z @ w + b)
        if self.response_head is not None and responses is not None and any(responses):
            rw, rb = self.response_head
            scores = torch.where(torch.tensor(list(responses)), torch.sigmoid(z @ rw + rb), scores)
        return scores.tolist()

    def score(self, conversations: Sequence[Sequence[Any] | str]) -> list[float]:
        """P(unsafe) of the last turn of each conversation."""
        if self.unsafe_head is None:
            raise RuntimeError("the guard is not trained: call fit() or load()")
        if not conversations:
            return []
        return self.scores_from_features(self.features(conversations), [_is_response(c) for c in conversations])

    def answer_from_features(self, x: torch.Tensor, threshold: float = 0.5, responses: Sequence[bool] | None = None
                             ) -> list[str]:
        """The guard's answers as Llama Guard writes them (`safe` / `unsafe\\nS1,S5`)."""
        z = self._z(x)
        answers = []
        for p, row in zip(self.scores_from_features(x, responses), z, strict=True):
            if p < threshold or not self.category_heads:
                answers.append("safe" if p < threshold else "unsafe\nS2")
                continue
            probs = {c: torch.sigmoid(row @ w + b).item() for c, (w, b) in self.category_heads.items()}
            codes = [c for c in CODES if probs.get(c, 0.0) >= 0.5] or [max(probs, key=probs.__getitem__)]
            answers.append("unsafe\n" + ",".join(codes))
        return answers

    def judge(self, conversations: Sequence[Sequence[Any] | str], excluded: Iterable[str] = (),
              threshold: float = 0.5) -> list[tuple[GuardVerdict, float]]:
        """(verdict, P(unsafe)) on each conversation's last turn from one forward pass per conversation,
        with this deployment's excluded categories."""
        if not conversations:
            return []
        x = self.features(conversations)
        excluded = list(excluded)
        responses = [_is_response(c) for c in conversations]
        answers = self.answer_from_features(x, threshold, responses)
        return [(parse_guard_output(a, excluded), p)
                for a, p in zip(answers, self.scores_from_features(x, responses), strict=True)]

    def classify(self, conversation: Sequence[Any] | str, excluded: Iterable[str] = (),
                 threshold: float = 0.5) -> GuardVerdict:
        """The verdict on the conversation's last turn, with this deployment's excluded categories."""
        return self.judge([conversation], excluded, threshold)[0][0]

    # ----- files
    def save(self, directory: str | Path) -> Path:
        from safetensors.torch import save_file

        if self.unsafe_head is None:
            raise RuntimeError("the guard is not trained: call fit() before save()")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {"mean": self.mean, "std": self.std,
                   "unsafe.w": self.unsafe_head[0], "unsafe.b": self.unsafe_head[1].reshape(1)}  # type: ignore[index]
        for code, (w, b) in self.category_heads.items():
            tensors[f"{code}.w"], tensors[f"{code}.b"] = w, b.reshape(1)
        if self.response_head is not None:
            tensors["response.w"], tensors["response.b"] = self.response_head[0], self.response_head[1].reshape(1)
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(directory / "probe.safetensors"))
        (directory / "guard.json").write_text(json.dumps({
            "kind": "herd-probe-guard", "base": str(self.loaded.source), "layers": list(self.layers),
            "max_tokens": self.max_tokens, "categories": sorted(self.category_heads)}, indent=2) + "\n")
        return directory

    @classmethod
    def load(cls, directory: str | Path, loaded: Any, quantization: str | None = None) -> ProbeGuard:
        from safetensors.torch import load_file

        directory = Path(directory)
        meta = json.loads((directory / "guard.json").read_text())
        if meta.get("kind") != "herd-probe-guard":
            raise ValueError(f"{directory}: not a herd probe guard (guard.json kind {meta.get('kind')!r})")
        guard = cls(loaded, meta["layers"], meta["max_tokens"], quantization=quantization)
        t = load_file(str(directory / "probe.safetensors"))
        guard.mean, guard.std = t["mean"], t["std"]
        guard.unsafe_head = (t["unsafe.w"], t["unsafe.b"][0])
        guard.category_heads = {c: (t[f"{c}.w"], t[f"{c}.b"][0]) for c in meta["categories"]}
        if "response.w" in t:
            guard.response_head = (t["response.w"], t["response.b"][0])
        return guard


def load_guard(directory: str | Path, loaded: Any = None, quantization: str | None = None) -> ProbeGuard:
    """A saved probe guard on its base model: `loaded` when that is the base (a server's own model is
    shared), else the base named in guard.json, loaded here."""
    meta_path = Path(directory) / "guard.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{directory}: no guard.json (train one with `herd guard train --out DIR`)")
    base = json.loads(meta_path.read_text())["base"]
    if loaded is None or str(loaded.source) != base:
        from herd.loading import load_model

        loaded = load_model(base)
    return ProbeGuard.load(directory, loaded, quantization)
