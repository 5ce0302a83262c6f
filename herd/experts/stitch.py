"""Stitch layers: the only trained parameters of a Branch-Train-Stitch model.

A seed model is branched into n experts by continued pretraining. The seed (the hub) and the experts
then run side by side, frozen, and K stitch layers placed after every floor(L/K) layers exchange hidden
states between the hub and each expert (hub-and-spoke: experts never talk to each other). Two kinds
alternate so that the last is always Experts-into-Hub, whose output the hub's own head reads:

- Experts-into-Hub: g = softmax(dropout(W_gate h0)) over the n+1 models, separately for every hidden
  dimension; h0' = g0 * h0 + sum_i gi * W_proj,i(hi). The experts' states pass through unchanged.
- Hub-into-Experts: g = sigmoid(dropout(W_gate h0)); h0' = h0 and hi' = (1 - gi) * hi + gi * W_proj,i(h0).

Each stitch holds W_gate (d -> (n+1) d, no bias) and n projections d x d: K (2n+1) d^2 parameters in all
(the paper's d = 3072, n = 3, K = 4: 264,241,152). In Hub-into-Experts the hub's slot of the gate is
unused (the hub passes through); it is kept so that both kinds have the same shapes and count.

Initialisation makes a stitched model start as the seed: zero gate weights (uniform softmax gates;
sigmoid gates of 1/2) and identity projections, so with experts that are unmodified copies of the seed
every stitch maps identical states to themselves (a convex mix of equal vectors), dropout or not.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from herd.model import Transformer
from herd.model.attention import AttentionState

EXPERTS_INTO_HUB = "experts_into_hub"
HUB_INTO_EXPERTS = "hub_into_experts"
KINDS = (EXPERTS_INTO_HUB, HUB_INTO_EXPERTS)


def stitch_plan(n_layers: int, n_stitches: int) -> list[tuple[int, str]]:
    """Where the stitches go: (number of layers run before the stitch, kind), in order.

    One stitch after every floor(L/K) layers; kinds alternate backwards from the last, which is always
    Experts-into-Hub (L = 20, K = 4 -> after layers 5, 10, 15, 20: H->E, E->H, H->E, E->H). Layers past
    the last stitch run on the hub alone.
    """
    if n_layers < 1:
        raise ValueError(f"a model needs at least one layer, got {n_layers}")
    if not 1 <= n_stitches <= n_layers:
        raise ValueError(f"the number of stitches must be between 1 and the model's {n_layers} layers, got {n_stitches}")
    every = n_layers // n_stitches
    return [(every * (i + 1), EXPERTS_INTO_HUB if (n_stitches - 1 - i) % 2 == 0 else HUB_INTO_EXPERTS)
            for i in range(n_stitches)]


def stitch_parameter_count(dim: int, n_experts: int, n_stitches: int) -> int:
    """Trainable parameters of K stitches joining n experts to a hub of width d: K (2n+1) d^2."""
    return n_stitches * (2 * n_experts + 1) * dim * dim


class StitchLayer(nn.Module):
    """One stitch between the hub's hidden state and each expert's (see the module docstring)."""

    def __init__(self, dim: int, n_experts: int, kind: str, dropout: float = 0.1) -> None:
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"stitch kind must be one of {KINDS}, got {kind!r}")
        if n_experts < 1:
            raise ValueError(f"a stitch joins at least one expert to the hub, got {n_experts}")
        self.dim, self.n_experts, self.kind = dim, n_experts, kind
        self.gate = nn.Linear(dim, dim * (n_experts + 1), bias=False)
        self.proj = nn.ModuleList(nn.Linear(dim, dim, bias=False) for _ in range(n_experts))
        self.dropout = nn.Dropout(dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Zero gate weights and identity projections: the stitch starts as a no-op on equal states."""
        with torch.no_grad():
            self.gate.weight.zero_()
            for proj in self.proj:
                proj.weight.copy_(torch.eye(self.dim, dtype=proj.weight.dtype, device=proj.weight.device))

    def gates(self, hub: torch.Tensor) -> torch.Tensor:
        """Gate values [..., n+1, dim] from the hub's state [..., dim]: a softmax over the n+1 models
        (Experts-into-Hub) or one sigmoid per model (Hub-into-Experts; slot 0, the hub's, unused)."""
        logits = self.dropout(self.gate(hub)).unflatten(-1, (self.n_experts + 1, self.dim))
        return logits.softmax(dim=-2) if self.kind == EXPERTS_INTO_HUB else torch.sigmoid(logits)

    def forward(self, hub: torch.Tensor, experts: Sequence[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(hub state, expert states) -> the same after the exchange; every state is [..., dim]."""
        if len(experts) != self.n_experts:
            raise ValueError(f"this stitch joins {self.n_experts} experts, got {len(experts)} expert states")
        g = self.gates(hub)
        if self.kind == EXPERTS_INTO_HUB:
            mixed = g[..., 0, :] * hub
            for i, (state, proj) in enumerate(zip(experts, self.proj)):
                mixed = mixed + g[..., i + 1, :] * proj(state)
            return mixed, list(experts)
        return hub, [(1 - g[..., i + 1, :]) * state + g[..., i + 1, :] * proj(hub)
                     for i, (state, proj) in enumerate(zip(experts, self.proj))]


class StitchedModel(nn.Module):
    """A frozen hub and frozen experts run layer by layer, joined by trainable stitch layers.

    The output is the hub's head over the hub's final state (next-token logits, as the seed's). Experts
    stop after the last stitch: their later layers and heads never affect the output. `hub` and the
    experts must share the hidden size and the layer count (experts branched from the hub do).
    """

    def __init__(self, hub: Transformer, experts: Sequence[Transformer], n_stitches: int, dropout: float = 0.1) -> None:
        super().__init__()
        if not experts:
            raise ValueError("a stitched model needs at least one expert")
        cfg = hub.config
        for i, expert in enumerate(experts):
            other = expert.config
            if (other.dim, other.n_layers) != (cfg.dim, cfg.n_layers):
                raise ValueError(f"expert {i} has dim {other.dim} and {other.n_layers} layers; the hub has dim "
                                 f"{cfg.dim} and {cfg.n_layers} layers (experts must be branched from the hub)")
        self.hub = hub
        self.experts = nn.ModuleList(experts)
        for model in (hub, *experts):
            model.requires_grad_(False)
        self.plan = stitch_plan(cfg.n_layers, n_stitches)
        param = next(hub.parameters())
        self.stitches = nn.ModuleList(
            StitchLayer(cfg.dim, len(experts), kind, dropout) for _, kind in self.plan
        ).to(device=param.device, dtype=param.dtype)

    def train(self, mode: bool = True) -> StitchedModel:
        """Only the stitches change mode: the frozen hub and experts always run as at inference."""
        super().train(mode)
        self.hub.eval()
        self.experts.eval()
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The stitches' parameters, the only ones an optimizer should see."""
        return list(self.stitches.parameters())

    def forward(
        self, tokens: torch.Tensor, positions: torch.Tensor | None = None, attention: AttentionState | None = None,
    ) -> torch.Tensor:
        """Next-token logits [B, T, vocab] of the stitched model for `tokens` [B, T].

        `attention` must be stateless across models (causal, or a document mask): one per-layer KV
        cache state would be shared by the hub and every expert.
        """
        return self.hub.head(self._run(tokens, positions, attention, last_gates=False))

    @torch.no_grad()
    def last_gates(self, tokens: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        """The last stitch's gates per token, averaged over dimensions: [B, T, n+1] (hub first). The
        paper reads these to see which expert a token is routed to."""
        return self._run(tokens, positions, None, last_gates=True).mean(dim=-1)

    def _run(self, tokens: torch.Tensor, positions: torch.Tensor | None, attention: AttentionState | None,
             last_gates: bool) -> torch.Tensor:
        """The hub's final hidden state, or (`last_gates`) the last stitch's gates [B, T, n+1, dim]."""
        if positions is None:
            positions = torch.arange(tokens.shape[-1], device=tokens.device)
        hub = self.hub.embed(tokens)
        experts = [expert.embed(tokens) for expert in self.experts]
        start = 0
        for index, ((end, _), stitch) in enumerate(zip(self.plan, self.stitches)):
            hub = self.hub.run_layers(hub, positions, attention, start, end)
            experts = [model.run_layers(h, positions, attention, start, end) for model, h in zip(self.experts, experts)]
            if last_gates and index == len(self.stitches) - 1:
                return stitch.gates(hub)
            hub, experts = stitch(hub, experts)
            start = end
        return self.hub.run_layers(hub, positions, attention, start, None)
