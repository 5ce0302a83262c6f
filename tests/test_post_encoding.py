"""SFT and preference encodings: masks from the chat format, the prompt shared once."""

from __future__ import annotations

import pytest

from herd.post.encoding import encode_preference, encode_sft
from herd.tokenizer import Llama3Tokenizer
from herd.tokenizer.chat import Message
from herd.tokenizer.llama3_chat import Llama3ChatFormat


@pytest.fixture(scope="module")
def fmt() -> Llama3ChatFormat:
    return Llama3ChatFormat(Llama3Tokenizer())


def test_sft_paper_mask_is_every_assistant_body_and_its_eot(fmt: Llama3ChatFormat) -> None:
    msgs = [Message("user", "Hi"), Message("assistant", "Hello!"), Message("user", "2+2?"),
            Message("assistant", "4")]
    enc = encode_sft(fmt, msgs, "paper")
    tok = fmt.tokenizer
    trained = [t for t, m in zip(enc.tokens, enc.loss_mask) if m]
    assert trained == tok.encode("Hello!") + [fmt.eot_id] + tok.encode("4") + [fmt.eot_id]
    completion = encode_sft(fmt, msgs, "completion")
    assert [t for t, m in zip(completion.tokens, completion.loss_mask) if m] == tok.encode("4") + [fmt.eot_id]
    with pytest.raises(ValueError, match="end with an assistant"):
        encode_sft(fmt, msgs[:1])


def test_preference_shares_the_prompt_and_masks_header_and_eot(fmt: Llama3ChatFormat) -> None:
    prompt = [Message("system", "Be brief."), Message("user", "Capital of France?")]
    responses = [[Message("assistant", "Paris.")], [Message("assistant", "Paris, I think.")]]
    enc = encode_preference(fmt, prompt, responses, "paper", strength="better")
    assert enc.prompt == fmt.encode_dialog(prompt, add_generation_prompt=True).tokens
    tok = fmt.tokenizer
    assert enc.responses[0] == tok.encode("Paris.") + [fmt.eot_id]
    # both responses start with " Paris"-like tokens: they stay in each branch, scored for each
    assert enc.responses[1][0] == enc.responses[0][0]
    assert enc.branch_masks[0] == [True] * len(tok.encode("Paris.")) + [False]
    full = encode_preference(fmt, prompt, responses, "completion")
    assert all(all(m) for m in full.branch_masks)
    assert enc.group().length == enc.length
    with pytest.raises(ValueError, match="at least 2"):
        encode_preference(fmt, prompt, responses[:1])
    with pytest.raises(ValueError, match="mask"):
        encode_preference(fmt, prompt, responses, "everything")
