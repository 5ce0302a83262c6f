"""POST /v1/moderations: OpenAI's moderation endpoint over the server's guard (`herd serve --guard`).

Request `{"input": str | [str], "model"?}`; answer `{"id", "model", "results": [{"flagged", "categories",
"category_scores", "llama_guard": {"answer", "unsafe_score"}}]}` with OpenAI's category keys filled from
the guard's S-codes (herd.serve.guarding.OPENAI_CATEGORIES). A malformed request, or a server started
without a guard, is a 400 in OpenAI's error shape.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from pydantic import Field

from herd.serve.protocol import OpenAIError, _Model, new_id, parse_request
from herd.serve.served_model import ServedModel

MAX_INPUTS = 32


class ModerationRequest(_Model):
    input: str | list[str] = Field(...)
    model: str | None = None


async def moderation(served: ServedModel, request: Request) -> dict[str, Any]:
    req = parse_request(await request.body(), ModerationRequest)
    if served.guard is None or served.guard.guard is None:
        raise OpenAIError("this server has no guard model: start it with `herd serve --guard DIR`", param="model")
    texts = [req.input] if isinstance(req.input, str) else list(req.input)
    if not texts:
        raise OpenAIError("input must hold at least one text", param="input")
    if len(texts) > MAX_INPUTS:
        raise OpenAIError(f"at most {MAX_INPUTS} inputs per request, got {len(texts)}", param="input")
    results = await served.guard.moderate(texts)
    return {"id": new_id("modr"), "model": req.model or "herd-guard", "results": results}
