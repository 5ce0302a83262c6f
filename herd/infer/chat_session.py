"""A multi-turn conversation with a loaded model: keeps the history and streams replies."""

from __future__ import annotations

from collections.abc import Iterator

from dataclasses import replace

from herd.infer.engine import EngineConfig, LLMEngine
from herd.infer.sampling import SamplingParams
from herd.loading import LoadedModel
from herd.tokenizer.chat import Message


class ChatSession:
    """History + streaming replies. Old turns are dropped (system prompt kept) when the context fills.

    Replies stream from one `LLMEngine` kept for the session, with prefix caching: each turn's
    prompt starts with the previous turns, whose KV blocks are still cached, so only the new
    message is prefilled.
    """

    def __init__(
        self, loaded: LoadedModel, params: SamplingParams, system: str | None = None,
        engine: LLMEngine | None = None, *, quantization: str | None = None, compile: bool = False,
    ) -> None:
        self.loaded = loaded
        self.params = params
        self.system = system
        self.history: list[Message] = []
        self._engine = engine
        self._engine_options = {"quantization": quantization, "compile": compile}

    @property
    def engine(self) -> LLMEngine:
        """The session's engine, made on first use with a cache for one full-context sequence."""
        if self._engine is None:
            block_size = 16
            tokens = self.loaded.config.max_seq_len
            self._engine = LLMEngine(
                self.loaded,
                EngineConfig(
                    block_size=block_size, num_blocks=-(-tokens // block_size), max_num_seqs=1,
                    **self._engine_options,  # type: ignore[arg-type]
                ),
            )
        return self._engine

    def reset(self) -> None:
        self.history = []

    def set_system(self, text: str | None) -> None:
        self.system = text or None

    def messages(self) -> list[Message]:
        prefix = [Message(role="system", content=self.system)] if self.system else []
        return prefix + self.history

    def _prompt_tokens(self) -> list[int]:
        budget = min(self.loaded.config.max_seq_len, self.engine.max_model_len) - self.params.max_tokens
        while True:
            tokens = self.loaded.chat_format.encode_dialog(self.messages(), add_generation_prompt=True).tokens
            if len(tokens) <= budget or len(self.history) <= 1:
                break
            self.history = self.history[2:] if len(self.history) > 2 else self.history[1:]
        if len(tokens) > budget:
            raise ValueError(
                f"the message needs {len(tokens)} tokens but only {budget} fit before the reply "
                f"(context {self.loaded.config.max_seq_len}, max_tokens {self.params.max_tokens})"
            )
        return tokens

    def send(self, text: str) -> Iterator[str]:
        """Add a user turn and stream the assistant's reply; the reply joins the history when done."""
        self.history.append(Message(role="user", content=text))
        try:
            prompt = self._prompt_tokens()
        except ValueError:
            self.history.pop()
            raise
        pieces: list[str] = []
        params = replace(self.params, n=1)
        for out in self.engine.stream(prompt, params):
            piece = out.outputs[0].delta_text
            if piece:
                pieces.append(piece)
                yield piece
        reply = self.loaded.chat_format.parse_assistant("".join(pieces))
        self.history.append(reply)

    @property
    def last_reply(self) -> Message | None:
        return self.history[-1] if self.history and self.history[-1].role == "assistant" else None
