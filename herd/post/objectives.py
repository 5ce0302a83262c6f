"""DPO as an `Objective` of the one training loop (herd.train.objective), with cached reference log-probs.

A batch is a list of (index, EncodedPreference). Each preference with K ranked responses gives the
K(K-1)/2 ordered (better, worse) pairs; the batch loss is

    sum over pairs of the DPO loss / pairs in the batch
    + nll_weight * (chosen NLL summed over tokens / chosen tokens in the batch)     (nll_mode "token")
    + nll_weight * (sum over pairs of chosen NLL per token / pairs in the batch)    (nll_mode "sequence")

computed in micro-batches whose gradients add up to exactly this (each share is divided by the whole
batch's counts). The reference model is the starting checkpoint: its log-probs are computed once
before training (`reference = "precompute"`, cached in `<out_dir>/reference_logps.pt` under a
fingerprint of data, weights and masks; a cache with another fingerprint is refused, never reused)
or at every step (`"live"`, more compute, no cache).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from herd.model import ModelConfig, Transformer
from herd.post.encoding import EncodedPreference
from herd.post.logprobs import fingerprint_preferences, fingerprint_weights, preference_token_logprobs
from herd.post.losses import dpo_loss_sum, ranking_pairs
from herd.train.init import ModelInit

if TYPE_CHECKING:
    from herd.train.schedule import StepShape
    from herd.train.trainer import Trainer

REFERENCE_MODES = ("precompute", "live")
NLL_MODES = ("token", "sequence")
Batch = Sequence[tuple[int, EncodedPreference]]


class ReferenceCacheError(RuntimeError):
    """A reference log-prob cache that belongs to other data, weights or masks."""


def _pair_counts(batch: Batch) -> tuple[int, int]:
    """(ordered pairs, masked tokens of the better response over all pairs) of a batch."""
    pairs = tokens = 0
    for _, pref in batch:
        for i, _j in ranking_pairs(len(pref.responses)):
            pairs += 1
            tokens += sum(pref.branch_masks[i])
    return pairs, tokens


class DPOObjective:
    name = "dpo"

    def __init__(self, train: Sequence[EncodedPreference], validation: Sequence[EncodedPreference], *,
                 model_config: ModelConfig, init: ModelInit, beta: float = 0.1, nll_weight: float = 0.2,
                 nll_mode: str = "token", label_smoothing: float = 0.0, loss_type: str = "sigmoid",
                 reference: str = "precompute", prefix_sharing: bool = True, cache_dir: str | Path | None = None,
                 mask: str = "paper") -> None:
        if reference not in REFERENCE_MODES:
            raise ValueError(f"dpo.reference must be one of {REFERENCE_MODES}, got {reference!r}")
        if nll_mode not in NLL_MODES:
            raise ValueError(f"dpo.nll_mode must be one of {NLL_MODES}, got {nll_mode!r}")
        if nll_weight < 0:
            raise ValueError(f"dpo.nll_weight must be >= 0, got {nll_weight}")
        self.data = {"train": list(train), "validation": list(validation)}
        self.model_config, self.init = model_config, init
        self.beta, self.nll_weight, self.nll_mode = beta, nll_weight, nll_mode
        self.label_smoothing, self.loss_type = label_smoothing, loss_type
        self.reference, self.prefix_sharing, self.mask = reference, prefix_sharing, mask
        self.cache_path = Path(cache_dir) / "reference_logps.pt" if cache_dir is not None else None
        self._reference_model: Transformer | None = None
        self._reference_logps: dict[str, list[list[float]]] | None = None

    # -- the reference -------------------------------------------------------------------------
    def _build_reference(self, device: torch.device) -> Transformer:
        torch_state = torch.random.get_rng_state()
        model = Transformer(self.model_config)
        self.init.apply(model)
        if self.model_config.tie_embeddings:
            model.output.weight = model.tok_embeddings.weight
        torch.random.set_rng_state(torch_state)  # building the reference must not move the run's RNG
        return model.to(device).eval().requires_grad_(False)

    @torch.no_grad()
    def _sequence_logps(self, model: Transformer, prefs: Sequence[EncodedPreference], device: torch.device,
                        autocast_dtype: torch.dtype | None, chunk: int = 8) -> list[list[float]]:
        out: list[list[float]] = []
        for start in range(0, len(prefs), chunk):
            part = prefs[start:start + chunk]
            token_logps = preference_token_logprobs(model, part, prefix_sharing=self.prefix_sharing, device=device,
                                                    autocast_dtype=autocast_dtype)
            out += [[float(t.sum()) for t in per_response] for per_response in token_logps]
        return out

    def prepare(self, trainer: Trainer) -> None:
        """Reference log-probs for every preference (precompute) or the reference model (live)."""
        if self._reference_model is not None or self._reference_logps is not None:
            return
        reference = self._build_reference(trainer.device)
        if self.reference == "live":
            self._reference_model = reference
            return
        key = {"weights": fingerprint_weights(reference), "mask": self.mask,
               **{split: fingerprint_preferences(prefs) for split, prefs in self.data.items()}}
        if self.cache_path is not None and self.cache_path.is_file():
            cached = torch.load(self.cache_path, weights_only=True)
            if cached.get("key") != key:
                raise ReferenceCacheError(
                    f"{self.cache_path} holds reference log-probs for other data, weights or masks "
                    f"(fingerprint {cached.get('key')} vs {key}); delete it to recompute, or use another run.out_dir")
            self._reference_logps = cached["logps"]
        else:
            trainer_log = getattr(getattr(trainer, "logger", None), "message", print)
            count = sum(len(p) for p in self.data.values())
            trainer_log(f"dpo: reference log-probs for {count} preferences (computed once, cached)")
            self._reference_logps = {split: self._sequence_logps(reference, prefs, trainer.device,
                                                                 trainer.autocast_dtype)
                                     for split, prefs in self.data.items()}
            if self.cache_path is not None:
                self.cache_path.parent.mkdir(parents=True, exist_ok=True)
                tmp = self.cache_path.with_suffix(".tmp")
                torch.save({"key": key, "logps": self._reference_logps}, tmp)
                tmp.replace(self.cache_path)
        del reference

    def _reference_for(self, split: str, batch: Batch, trainer: Trainer) -> list[list[float]]:
        if self._reference_model is not None:
            return self._sequence_logps(self._reference_model, [p for _, p in batch], trainer.device,
                                        trainer.autocast_dtype)
        assert self._reference_logps is not None
        return [self._reference_logps[split][i] for i, _ in batch]

    # -- the loss -----------------------------------------------------------------------------
    def _loss(self, trainer: Trainer, part: Batch, reference: list[list[float]], n_pairs: int, n_tokens: int
              ) -> tuple[torch.Tensor, dict[str, float]]:
        token_logps = preference_token_logprobs(
            trainer.forward_model, [p for _, p in part], prefix_sharing=self.prefix_sharing,
            device=trainer.device, autocast_dtype=trainer.autocast_dtype)
        chosen, rejected, ref_c, ref_r, nll_terms = [], [], [], [], []
        for per_response, ref in zip(token_logps, reference):
            for i, j in ranking_pairs(len(per_response)):
                chosen.append(per_response[i].sum())
                rejected.append(per_response[j].sum())
                ref_c.append(ref[i])
                ref_r.append(ref[j])
                nll = -per_response[i].sum()
                nll_terms.append(nll if self.nll_mode == "token" else nll / max(1, per_response[i].numel()))
        pc, pr = torch.stack(chosen), torch.stack(rejected)
        terms = dpo_loss_sum(pc, pr, torch.tensor(ref_c, device=pc.device), torch.tensor(ref_r, device=pc.device),
                             self.beta, self.label_smoothing, self.loss_type)
        nll_sum = torch.stack(nll_terms).sum()
        nll_norm = n_tokens if self.nll_mode == "token" else n_pairs
        loss = terms.loss_sum / n_pairs + self.nll_weight * nll_sum / max(1, nll_norm)
        sums = {
            "rewards/chosen": float(terms.chosen_rewards.sum()),
            "rewards/rejected": float(terms.rejected_rewards.sum()),
            "rewards/accuracies": float((terms.chosen_rewards > terms.rejected_rewards).float().sum()),
            "rewards/margins": float((terms.chosen_rewards - terms.rejected_rewards).sum()),
            "logps/chosen": float(pc.detach().sum()),
            "logps/rejected": float(pr.detach().sum()),
            "nll_loss": float(nll_sum.detach()) / max(1, nll_norm) * n_pairs,  # averaged over pairs below
            "dpo_loss": float(terms.loss_sum.detach()),
        }
        return loss, sums

    def forward_backward(self, trainer: Trainer, batch: Batch, shape: StepShape) -> dict[str, Any]:
        self.prepare(trainer)
        n_pairs, n_tokens = _pair_counts(batch)
        reference = self._reference_for("train", batch, trainer)
        micro = max(1, shape.micro_batch_size * len(batch) // max(1, shape.batch_size))
        total = 0.0
        sums: dict[str, float] = {}
        computed = 0
        for start in range(0, len(batch), micro):
            part = batch[start:start + micro]
            loss, part_sums = self._loss(trainer, part, reference[start:start + micro], n_pairs, n_tokens)
            loss.backward()
            total += float(loss.detach())
            for k, v in part_sums.items():
                sums[k] = sums.get(k, 0.0) + v
            computed += sum(p.length for _, p in part)
        stats = {k: v / n_pairs for k, v in sums.items()}
        return {"loss": total, "tokens": computed, **stats}

    @torch.no_grad()
    def validate(self, trainer: Trainer, loader: Any) -> float | None:
        self.prepare(trainer)
        total = 0.0
        batch_size = trainer.config.eval.batch_size or trainer.schedule.shape_at(trainer.tokens).micro_batch_size
        for _ in range(trainer.config.eval.batches):
            batch = loader.next_batch(batch_size, 0)
            n_pairs, n_tokens = _pair_counts(batch)
            loss, _ = self._loss(trainer, batch, self._reference_for("validation", batch, trainer), n_pairs, n_tokens)
            total += float(loss)
        return total / trainer.config.eval.batches


class RewardObjective:
    """The reward model's ranking loss (no margin) summed over every ordered pair, / pairs in the batch.

    Metrics: `loss`, `accuracy` (share of pairs ranked right), `margin` (mean r_better - r_worse) and
    `rewards/mean`; validation reports the held-out loss and stores the accuracy in `last_accuracy`.
    """

    name = "rm"

    def __init__(self, *, one_row: bool = True, center_coefficient: float = 0.0) -> None:
        self.one_row = one_row
        self.center_coefficient = center_coefficient
        self.last_accuracy: float | None = None

    def _sums(self, trainer: Trainer, part: Batch, n_pairs: int) -> tuple[torch.Tensor, dict[str, float]]:
        from herd.post.losses import reward_ranking_loss_sum
        from herd.post.reward_model import preference_rewards

        rewards = preference_rewards(trainer.forward_model, [p for _, p in part], one_row=self.one_row,
                                     device=trainer.device, autocast_dtype=trainer.autocast_dtype)
        total = torch.zeros((), device=trainer.device)
        right = margin = reward_sum = 0.0
        count = 0
        for r in rewards:
            loss, _ = reward_ranking_loss_sum(r, center_coefficient=self.center_coefficient)
            total = total + loss
            detached = r.detach()
            for i, j in ranking_pairs(len(r)):
                right += float(detached[i] > detached[j])
                margin += float(detached[i] - detached[j])
            reward_sum += float(detached.sum())
            count += len(r)
        return total / n_pairs, {"accuracy": right, "margin": margin, "reward_sum": reward_sum,
                                 "reward_count": float(count)}

    def forward_backward(self, trainer: Trainer, batch: Batch, shape: StepShape) -> dict[str, Any]:
        n_pairs, _ = _pair_counts(batch)
        micro = max(1, shape.micro_batch_size * len(batch) // max(1, shape.batch_size))
        total = 0.0
        sums: dict[str, float] = {}
        for start in range(0, len(batch), micro):
            part = batch[start:start + micro]
            loss, part_sums = self._sums(trainer, part, n_pairs)
            loss.backward()
            total += float(loss.detach())
            for k, v in part_sums.items():
                sums[k] = sums.get(k, 0.0) + v
        stats = {"accuracy": sums["accuracy"] / n_pairs, "margin": sums["margin"] / n_pairs,
                 "rewards/mean": sums["reward_sum"] / max(1.0, sums["reward_count"])}
        return {"loss": total, "tokens": sum(p.length for _, p in batch), **stats}

    @torch.no_grad()
    def validate(self, trainer: Trainer, loader: Any) -> float | None:
        total = right = 0.0
        pairs = 0
        batch_size = trainer.config.eval.batch_size or trainer.schedule.shape_at(trainer.tokens).micro_batch_size
        for _ in range(trainer.config.eval.batches):
            batch = loader.next_batch(batch_size, 0)
            n_pairs, _ = _pair_counts(batch)
            loss, sums = self._sums(trainer, batch, n_pairs)
            total += float(loss) * n_pairs
            right += sums["accuracy"]
            pairs += n_pairs
        self.last_accuracy = right / max(1, pairs)
        return total / max(1, pairs)
