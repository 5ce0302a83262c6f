"""One-row prefix layouts equal separate rows (the RM/DPO one-row layout and packed MC scoring)."""

from __future__ import annotations

import pytest
import torch

from herd.model import Transformer
from herd.model.config import get_config
from herd.model.shared_prefix import PrefixGroup, gather_branch_logprobs, pack_prefix_groups, pack_rows


@pytest.fixture(scope="module")
def model() -> Transformer:
    torch.manual_seed(0)
    return Transformer(get_config("llama3-tiny", vocab_size=300, n_layers=2)).float().eval()


def separate_logprobs(model: Transformer, prefix: list[int], branch: list[int]) -> torch.Tensor:
    ids = torch.tensor([prefix + branch])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).float(), dim=-1)[0]
    cols = torch.arange(len(prefix) - 1, len(prefix) + len(branch) - 1)
    return logp[cols, torch.tensor(branch)]


def random_groups(seed: int, count: int) -> list[PrefixGroup]:
    g = torch.Generator().manual_seed(seed)
    groups = []
    for _ in range(count):
        p = int(torch.randint(1, 12, (1,), generator=g))
        nb = int(torch.randint(1, 4, (1,), generator=g))
        prefix = torch.randint(1, 300, (p,), generator=g).tolist()
        branches = [torch.randint(1, 300, (int(torch.randint(1, 9, (1,), generator=g)),), generator=g).tolist()
                    for _ in range(nb)]
        groups.append(PrefixGroup(prefix, branches))
    return groups


@pytest.mark.parametrize("max_len", [None, 40, 200])
def test_packed_branches_equal_separate_rows(model: Transformer, max_len: int | None) -> None:
    groups = random_groups(1, 9)
    batch = pack_prefix_groups(groups, max_len=max_len)
    if max_len is not None:
        assert batch.tokens.shape[0] < len(groups)  # groups really share rows
    with torch.no_grad():
        logits = model(batch.tokens, batch.positions, batch.attention)
    got = gather_branch_logprobs(logits, batch)
    for group, per_branch in zip(groups, got):
        for branch, lp in zip(group.branches, per_branch):
            torch.testing.assert_close(lp, separate_logprobs(model, list(group.prefix), list(branch)),
                                       atol=1e-5, rtol=0)


def test_a_branch_never_sees_another(model: Transformer) -> None:
    a = pack_prefix_groups([PrefixGroup([5, 6, 7], [[8, 9], [10, 11, 12]])])
    b = pack_prefix_groups([PrefixGroup([5, 6, 7], [[8, 9], [99, 98, 97]])])
    with torch.no_grad():
        la = gather_branch_logprobs(model(a.tokens, a.positions, a.attention), a)
        lb = gather_branch_logprobs(model(b.tokens, b.positions, b.attention), b)
    torch.testing.assert_close(la[0][0], lb[0][0], atol=0, rtol=0)  # first branch untouched by the second
    assert not torch.allclose(la[0][1], lb[0][1])


def test_mask_layout_and_positions() -> None:
    batch = pack_prefix_groups([PrefixGroup([1, 2], [[3], [4, 5]])])
    assert batch.positions[0].tolist() == [0, 1, 2, 2, 3]
    m = batch.attention.mask[0, 0].int().tolist()
    assert m == [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [1, 1, 0, 1, 0], [1, 1, 0, 1, 1]]
    assert batch.spans[0][1].predicting_columns() == [1, 3]


def test_pack_rows_first_fit_and_bad_groups() -> None:
    assert sorted(map(sorted, pack_rows([5, 5, 5, 2], 10))) == [[0, 1], [2, 3]]
    assert pack_rows([30], 10) == [[0]]
    with pytest.raises(ValueError, match="non-empty prefix"):
        PrefixGroup([], [[1]])
    with pytest.raises(ValueError, match="no empty branch"):
        PrefixGroup([1], [[]])
