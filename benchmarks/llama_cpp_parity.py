"""Checks herd against llama.cpp (llama-cpp-python in benchmarks/.env; never part of CI).

1. Tokenization: herd's BPETokenizer (from the SmolLM2 GGUF metadata) vs llama.cpp's tokenizer on
   diverse text, including the cases where transformers' GGUF loader differs (unicode numerals).
2. A GGUF written by herd (F16 and Q8_0) loads in llama.cpp, and llama.cpp's greedy tokens agree with
   herd's on the same file.

    .venv/bin/python benchmarks/llama_cpp_parity.py [--llama-cpp-python benchmarks/.env/bin/python]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

TEXTS = [
    "Hello world, it's 2024!",
    "def f(x):\n    return x**2  # 12345",
    "日本語のテキスト 🦙🔥 한국어",
    "   \n\n\t  spaces and\r\nCRLF",
    " ٣٤٥ and ½ ①② numerals",
    "<|im_start|>user (special text, encoded as plain text)",
    "Ünïcödé façade naïve — “quotes”",
    "a" * 300 + " " * 50 + "b",
]
PROMPT = "Write a short poem about the sea."

PEER = r"""
import json, sys
from llama_cpp import Llama
mode, path = sys.argv[1], sys.argv[2]
if mode == "tokenize":
    llm = Llama(model_path=path, vocab_only=True, verbose=False)
    texts = json.loads(sys.stdin.read())
    print(json.dumps([llm.tokenize(t.encode(), add_bos=False, special=False) for t in texts]))
else:
    prompt, n = json.loads(sys.stdin.read()), int(sys.argv[3])
    llm = Llama(model_path=path, n_ctx=512, n_threads=2, verbose=False)
    out = []
    for tok in llm.generate(prompt, temp=0.0, top_k=1, repeat_penalty=1.0):
        out.append(tok)
        if len(out) == n:
            break
    print(json.dumps(out))
"""


def peer(python: str, args: list[str], payload: object) -> object:
    proc = subprocess.run([python, "-c", PEER, *args], input=json.dumps(payload), capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"llama.cpp peer failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--llama-cpp-python", default="benchmarks/.env/bin/python")
    parser.add_argument("--tokens", type=int, default=32)
    args = parser.parse_args()

    import herd
    from herd.checkpoint import read_checkpoint, write_checkpoint
    from herd.infer import SamplingParams, generate_tokens
    from herd.loading import resolve_spec
    from herd.tokenizer import Message

    source = resolve_spec("smollm2-135m-instruct")
    checkpoint = read_checkpoint(source)
    theirs = peer(args.llama_cpp_python, ["tokenize", str(source)], TEXTS)
    same = sum(checkpoint.tokenizer.encode(t) == r for t, r in zip(TEXTS, theirs))
    print(f"tokenization: {same}/{len(TEXTS)} texts give identical ids in herd and llama.cpp")

    with tempfile.TemporaryDirectory() as tmp:
        for qtype in ("f16", "q8_0"):
            path = write_checkpoint(checkpoint, Path(tmp) / f"smol.{qtype}.gguf", "gguf", gguf_type=qtype)
            loaded = herd.load_model(str(path))
            prompt = loaded.chat_format.encode_dialog([Message(role="user", content=PROMPT)]).tokens
            ours = list(generate_tokens(loaded.model, prompt, SamplingParams(max_tokens=args.tokens), stop_ids=()))
            cpp = peer(args.llama_cpp_python, ["generate", str(path), str(args.tokens)], prompt)
            prefix = next((i for i, (a, b) in enumerate(zip(ours, cpp)) if a != b), len(cpp))
            print(f"herd-written {qtype} GGUF: llama.cpp loads it; greedy tokens agree for the first "
                  f"{prefix}/{args.tokens} (herd computes in fp32, llama.cpp with its own kernels)")


if __name__ == "__main__":
    main()
