"""The model behind the endpoints, and the request checks chat and completions share.

`ServedModel` holds what every endpoint needs (engine, tokenizer, chat format, served name, context
length, metrics) and turns a request's sampling fields into the engine's `SamplingParams`, refusing
with an OpenAI error what the engine cannot do, before anything is submitted.
"""

from __future__ import annotations

from typing import Any

from herd.serve.metrics import Metrics
from herd.serve.protocol import MAX_TOP_LOGPROBS, OpenAIError, now


class ServedModel:
    def __init__(self, engine: Any, loaded: Any, model_name: str, metrics: Metrics,
                 server_tools: Any = None, guard: Any = None) -> None:
        self.engine = engine
        self.guard = guard  # herd.serve.guarding.ServeGuard: input/output guard and code shield
        self.server_tools = server_tools  # herd.serve.server_tools.ServerTools: built-ins run server-side
        self.loaded = loaded
        self.model_name = model_name
        self.metrics = metrics
        self.tokenizer = loaded.tokenizer
        self.chat_format = loaded.chat_format
        # the engine's max_model_len also counts the KV cache's size (vLLM's max_model_len)
        llm = getattr(engine, "engine", engine)
        self.context = int(min(loaded.config.max_seq_len, getattr(llm, "max_model_len", loaded.config.max_seq_len)))
        # n samples run side by side, so n above the engine's batch size can never be scheduled
        self.max_n: int | None = getattr(getattr(llm, "config", None), "max_num_seqs", None)
        self.created = now()

    def check_model(self, model: str | None) -> None:
        if model is not None and model != self.model_name:
            raise OpenAIError(
                f"The model `{model}` does not exist. This server serves `{self.model_name}`.",
                status=404,
                param="model",
                code="model_not_found",
            )

    def model_card(self) -> dict[str, Any]:
        return {
            "id": self.model_name,
            "object": "model",
            "created": self.created,
            "owned_by": "herd",
            "root": str(self.loaded.source),
            "parent": None,
            "max_model_len": self.context,
        }

    def token_text(self, token_id: int) -> str:
        return self.tokenizer.token_bytes(token_id).decode("utf-8", errors="replace")

    def sampling_params(
        self, req: Any, max_tokens: int | None, prompt_len: int, *, default_max: int | None, chat: bool,
        logprobs: bool, top_logprobs: int, what: str, prompt_logprobs: int | None = None,
    ) -> Any:
        """The engine's SamplingParams for one prompt of `req`, or an OpenAIError naming the field.

        `max_tokens=None` means "as much as the context leaves" (capped at `default_max` if given);
        `what` is how the error messages name the prompt ("messages" or "prompt").
        """
        from herd.infer.sampling import SamplingParams

        if req.n < 1:
            raise OpenAIError(f"n must be at least 1, got {req.n}", param="n")
        if self.max_n is not None and req.n > self.max_n:
            raise OpenAIError(f"n must be at most {self.max_n} (the server's --max-num-seqs), got {req.n}", param="n")
        if req.logit_bias:
            raise OpenAIError("logit_bias is not supported by this server", param="logit_bias")
        name = "max_completion_tokens" if chat and getattr(req, "max_completion_tokens", None) is not None else "max_tokens"
        minimum = 1 if chat else 0
        if max_tokens is not None and max_tokens < minimum:
            raise OpenAIError(f"{name} must be at least {minimum}, got {max_tokens}", param=name)
        if not 0 <= top_logprobs <= MAX_TOP_LOGPROBS:
            param = "top_logprobs" if chat else "logprobs"
            raise OpenAIError(f"{param} must be between 0 and {MAX_TOP_LOGPROBS}, got {top_logprobs}", param=param)
        if prompt_len >= self.context:
            raise OpenAIError(
                f"This model's maximum context length is {self.context} tokens. However, your {what} resulted in "
                f"{prompt_len} tokens. Please reduce the length of the {what}.",
                param="messages" if chat else "prompt",
                code="context_length_exceeded",
            )
        room = self.context - prompt_len
        if max_tokens is None:
            max_tokens = room if default_max is None else min(default_max, room)
        elif max_tokens > room:
            raise OpenAIError(
                f"This model's maximum context length is {self.context} tokens. However, you requested "
                f"{prompt_len + max_tokens} tokens ({prompt_len} in the {what}, {max_tokens} in the completion). "
                f"Please reduce the length of the {what} or the completion.",
                param=name,
                code="context_length_exceeded",
            )
        try:
            return SamplingParams(
                temperature=1.0 if req.temperature is None else req.temperature,
                top_p=1.0 if req.top_p is None else req.top_p,
                top_k=req.top_k or 0,
                max_tokens=max_tokens,
                seed=req.seed,
                min_p=req.min_p or 0.0,
                repetition_penalty=1.0 if req.repetition_penalty is None else req.repetition_penalty,
                frequency_penalty=req.frequency_penalty,
                presence_penalty=req.presence_penalty,
                stop=req.stop_list(),
                stop_token_ids=tuple(req.stop_token_ids or ()),
                ignore_eos=req.ignore_eos,
                n=req.n,
                logprobs=logprobs,
                top_logprobs=top_logprobs,
                prompt_logprobs=prompt_logprobs,
            )
        except (TypeError, ValueError) as exc:
            text = str(exc)
            param = text.split(" ", 1)[0] if text.split(" ", 1)[0].isidentifier() else None
            raise OpenAIError(text, param=param) from None
