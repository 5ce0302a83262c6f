"""The `herd` command: convert through every format with real weights (training checkpoints included),
generate, chat, one flag vocabulary, and one-line errors (exit code 2, never a traceback) for bad input."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from herd.cli import build_parser, main

HERD = [sys.executable, "-m", "herd"]


def run_herd(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([*HERD, *args], input=stdin, capture_output=True, text=True, timeout=300, check=False)


def greedy(model: str, capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["generate", "--model", model, "--chat", "--prompt", "Name three colors.", "--max-tokens", "12"]) == 0
    return capsys.readouterr().out


def test_convert_through_every_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hf, meta, gguf = tmp_path / "hf", tmp_path / "meta", tmp_path / "smol.q8_0.gguf"
    assert main(["convert", "smollm2-135m-instruct", str(hf), "--to", "hf"]) == 0
    assert main(["convert", str(hf), str(meta), "--to", "meta", "--shards", "3"]) == 0
    assert main(["convert", str(meta), str(gguf), "--to", "gguf", "--gguf-type", "q8_0"]) == 0
    capsys.readouterr()
    assert (hf / "tokenizer.json").is_file() and (hf / "model.safetensors").is_file()
    assert len(list(meta.glob("consolidated.*.pth"))) == 3
    reference = greedy("smollm2-135m-instruct", capsys)
    assert reference.strip()
    assert greedy(str(hf), capsys) == reference
    assert greedy(str(meta), capsys) == reference
    assert greedy(str(gguf), capsys).strip()  # Q8_0 re-quantization may change a token; it must run


def test_chat_commands_over_a_pipe() -> None:
    result = run_herd(
        "chat", "--max-tokens", "8", "--temperature", "0",
        stdin="/system Answer in one word.\nHello there\n/reset\nWhat is 2+2?\n",
    )
    assert result.returncode == 0, result.stderr
    assert "[system prompt set]" in result.stdout and "[conversation cleared]" in result.stdout
    replies = [line for line in result.stdout.splitlines() if line and not line.startswith("[")]
    assert len(replies) == 2


def test_errors_name_the_problem(tmp_path: Path) -> None:
    result = run_herd("generate", "--model", str(tmp_path / "nope"), "--prompt", "x")
    assert result.returncode == 2
    assert "no model" in result.stderr and "nope" in result.stderr
    (tmp_path / "empty").mkdir()
    result = run_herd("convert", str(tmp_path / "empty"), str(tmp_path / "out"), "--to", "hf")
    assert result.returncode == 2 and "neither a Meta checkpoint" in result.stderr
    result = run_herd("convert", "x", "y", "--to", "onnx")
    assert result.returncode == 2 and "invalid choice" in result.stderr


def assert_one_line_error(result: subprocess.CompletedProcess[str], *expected: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr  # one line: no usage block, no traceback
    assert "Traceback" not in result.stderr
    for text in expected:
        assert text in lines[0], lines[0]


def herd_in_process(argv: list[str], capsys: pytest.CaptureFixture[str]) -> subprocess.CompletedProcess[str]:
    """`main(argv)` as a finished process (argparse's errors exit): the same checks, no interpreter start-up.
    Any exception other than the exit escapes, so a traceback still fails the test."""
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code  # type: ignore[assignment]
    out = capsys.readouterr()
    return subprocess.CompletedProcess(["herd", *argv], code, out.out, out.err)


SIZES = "llama3-8b, llama3-70b"  # the start of the list of named sizes the message gives
BAD_INPUT = {
    "unknown size": (["generate", "--model", "random:llama3-nope", "--prompt", "x"],
                     ["unknown model size 'llama3-nope'", SIZES, "llama3-tiny"]),
    "no such path": (["chat", "--model", "/no/such/model.gguf"],
                     ["no model '/no/such/model.gguf'", "smollm2-135m-instruct", "random:<size>"]),
    "bad dtype": (["generate", "--dtype", "bf15", "--prompt", "x"],
                  ["invalid dtype 'bf15'", "float32, bfloat16, float16", "fp32, bf16, fp16"]),
    "bad dtype in serve": (["serve", "--dtype", "half"], ["invalid dtype 'half'", "float32, bfloat16, float16"]),
    "bad dtype in convert": (["convert", "a", "b", "--to", "hf", "--dtype", "f8"], ["invalid dtype 'f8'"]),
    "bad device": (["generate", "--device", "tpu", "--prompt", "x"], ["invalid device 'tpu'", "auto, cpu, cuda"]),
    "bad format": (["convert", "a", "b", "--to", "onnx"], ["invalid choice: 'onnx'", "'hf', 'meta', 'gguf'"]),
    "bad shards": (["convert", "a", "b", "--to", "meta", "--shards", "0"], ["invalid shard count '0'"]),
    "random is no checkpoint": (["convert", "random:llama3-tiny", "out", "--to", "hf"],
                                ["'random:llama3-tiny' is not a checkpoint"]),
    "unknown command": (["genrate"], ["invalid choice: 'genrate'", "'generate'", "'convert'"]),
    "missing flag": (["generate"], ["the following arguments are required: --prompt"]),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUT))
def test_bad_input_is_one_line_naming_the_choices(case: str, capsys: pytest.CaptureFixture[str]) -> None:
    argv, expected = BAD_INPUT[case]
    assert_one_line_error(herd_in_process(argv, capsys), *expected)


def test_the_command_itself_answers_a_bad_size_and_dtype_in_one_line() -> None:
    assert_one_line_error(run_herd("generate", "--model", "random:llama3-nope", "--prompt", "x"),
                          "herd generate: error: unknown model size 'llama3-nope'", "llama3-tiny")
    assert_one_line_error(run_herd("serve", "--dtype", "bf15"), "herd serve: error: argument --dtype", "bfloat16")


def test_cuda_device_is_checked_before_loading() -> None:
    result = run_herd("generate", "--model", "random:llama3-tiny", "--device", "cuda", "--prompt", "Hi",
                      "--max-tokens", "2")
    if torch.cuda.is_available():
        assert result.returncode == 0, result.stderr
    else:
        assert_one_line_error(result, "--device cuda:", "use --device cpu (or auto)")


def test_help_lists_every_command_with_one_line() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {action.dest: action.help for action in sub._choices_actions}
    assert set(helps) == set(sub.choices) and len(helps) >= 12
    result = run_herd("--help")
    assert result.returncode == 0
    for name, text in helps.items():
        assert text and len(text) < 120, (name, text)
        assert f"    {name}" in result.stdout, name
    for name in ("generate", "chat", "serve", "convert", "curate", "pretrain", "demo", "plan"):
        assert name in helps


def test_every_out_flag_is_the_shared_one() -> None:
    """`--out` is spelled by `herd.cli_args.add_out_arg` everywhere: `DIR` in usage, required exactly when
    there is no default, and a default shown once by argparse (not hand-written into the help)."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    outs = {name: action for name, command in sub.choices.items() for action in command._actions
            if "--out" in action.option_strings}
    assert {"tokenize", "demo", "judge-data"} <= set(outs)
    for name, action in outs.items():
        assert action.metavar == "DIR", name
        assert action.required == (action.default is None), name
        shown = (action.help or "") % {"default": action.default}  # the text --help prints
        assert shown and shown.count("default") == (action.default is not None), (name, shown)
        if action.default is not None:
            assert action.help.endswith("(default: %(default)s)"), (name, action.help)
    assert outs["tokenize"].required and outs["demo"].default == "runs/demo"


# Every command's --help in one fresh interpreter; then the heavy modules it loaded (none expected).
HELP_EVERYWHERE = (
    "import argparse, contextlib, io, sys\n"
    "from herd.cli import build_parser, main\n"
    "sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))\n"
    "for argv in [['--help'], *([name, '--help'] for name in sub.choices)]:\n"
    "    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
    "        main(argv)\n"
    "heavy = ('torch', 'numpy', 'fastapi', 'uvicorn', 'datatrove', 'pyarrow', 'ray', 'tokenizers', 'safetensors')\n"
    "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in heavy)))\n"
)


def test_help_imports_no_torch() -> None:
    """`herd --help` and every `herd COMMAND --help` answer without importing torch (or any extra): command
    registration is lazy, so help is instant and works before the heavy dependencies are installed."""
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "herd", "--help"], capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0 and "commands:" in result.stdout, result.stderr[-2000:]
    imported = {line.rpartition("|")[2].strip() for line in result.stderr.splitlines()
                if line.startswith("import time:")}
    assert "herd.cli" in imported  # the import-time report is there to read
    assert not {name for name in imported if name.split(".")[0] == "torch"}, "herd --help imported torch"
    result = subprocess.run([sys.executable, "-c", HELP_EVERYWHERE], capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"COMMAND --help imported: {result.stdout.strip()}"


def test_dtype_aliases_and_device_on_generate_and_chat() -> None:
    common = ["--model", "random:llama3-tiny", "--max-tokens", "3", "--seed", "0"]
    full = run_herd("generate", *common, "--prompt", "Hello", "--dtype", "bfloat16", "--device", "cpu")
    alias = run_herd("generate", *common, "--prompt", "Hello", "--dtype", "bf16", "--device", "auto")
    assert full.returncode == 0 and alias.returncode == 0, full.stderr + alias.stderr
    assert full.stdout == alias.stdout  # the alias is the same dtype (and auto is cpu here or cuda; same tokens)
    chat = run_herd("chat", *common, "--dtype", "fp16", "--device", "cpu", stdin="Hi\n")
    assert chat.returncode == 0, chat.stderr


# A missing optional extra: the module is made unimportable (None in sys.modules) before herd starts.
BLOCKED_RUN = (
    "import sys\n"
    "for m in ('fastapi', 'uvicorn', 'starlette', 'datatrove', 'selectolax', 'pyarrow', 'xxhash', 'orjson', "
    "'tensorboard', 'matplotlib', 'prometheus_client'): sys.modules[m] = None\n"
    "from herd.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def run_without_extras(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", BLOCKED_RUN, *args], capture_output=True, text=True, timeout=300,
                          check=False)


def test_a_missing_extra_is_one_line_with_the_pip_command() -> None:
    assert run_without_extras("--help").returncode == 0  # registering commands imports no extra
    assert_one_line_error(run_without_extras("serve", "--port", "0"), "pip install 'herd[serve]'", "fastapi")
    result = run_without_extras("curate", str(Path(__file__).parents[1] / "configs/curate/smoke.toml"))
    assert_one_line_error(result, "pip install 'herd[data]'")


# ---- a training checkpoint is a convert source ------------------------------------------------------


def tiny_training_checkpoints(root: Path, vocab_size: int) -> tuple[dict[str, torch.Tensor], Path, Path]:
    """The same small Llama 3 saved as a single-process training checkpoint (steps 5 and 7) and as a
    distributed (DCP) one: (weights, checkpoints dir, DCP step dir). With the real 128K vocabulary the
    Llama 3 tokenizer comes along; with a byte vocabulary there is none (and converting is quicker)."""
    from herd.model import Transformer, get_config, init_weights
    from herd.train import checkpointing
    from herd.train.parallel.dcp import save_sharded

    config = get_config("llama3-tiny").replace(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=vocab_size)
    model = Transformer(config)
    init_weights(model, generator=torch.Generator().manual_seed(0))
    meta = {"model_config": config.to_meta_params()}
    state = {k: v.clone() for k, v in model.state_dict().items()}
    single = root / "single/checkpoints"
    checkpointing.save_checkpoint(single, 5, state, {}, meta, keep_last=2)
    checkpointing.save_checkpoint(single, 7, state, {}, meta, keep_last=2)
    dist = root / "dist/checkpoints"
    tmp = checkpointing.begin_checkpoint(dist, 4)
    with pytest.warns(UserWarning):  # "no process group: saving in a single process" is what we want here
        save_sharded(tmp / checkpointing.DCP_DIR, [model], [torch.optim.AdamW(model.parameters())])
    checkpointing.commit_checkpoint(tmp, 4, meta, keep_last=2)
    return state, single, dist / "step_00000004"


def test_convert_training_checkpoints_to_every_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from herd.checkpoint import read_checkpoint

    state, single, _ = tiny_training_checkpoints(tmp_path / "llama3", 128_256)
    hf = tmp_path / "hf"
    assert main(["convert", str(single), str(hf), "--to", "hf"]) == 0  # a directory of checkpoints: its newest
    assert "step_00000007" in capsys.readouterr().out and (hf / "tokenizer.json").is_file()
    assert main(["generate", "--model", str(hf), "--prompt", "Hi", "--max-tokens", "2"]) == 0
    back = read_checkpoint(hf).state
    assert set(back) == set(state) and all(torch.equal(back[k], v) for k, v in state.items())

    state, _, dist = tiny_training_checkpoints(tmp_path / "bytes", 258)
    meta, gguf = tmp_path / "meta", tmp_path / "tiny.gguf"
    assert main(["convert", str(dist), str(meta), "--to", "meta", "--shards", "2", "--dtype", "bf16"]) == 0
    assert main(["convert", str(dist.parent), str(gguf), "--to", "gguf", "--gguf-type", "q8_0"]) == 0
    capsys.readouterr()
    assert len(list(meta.glob("consolidated.*.pth"))) == 2
    for path, dtype in ((meta, torch.bfloat16), (gguf, None)):
        back = read_checkpoint(path).state
        assert set(back) == set(state), path
        for name, tensor in state.items():
            expected = tensor.to(dtype) if dtype is not None else tensor
            # Q8_0: one scale per 32 values, absmax/127, so rounding moves a value by at most half of that
            tol = 0.0 if dtype is not None else float(tensor.abs().max()) / 127 / 2 * 1.01 + 1e-3
            assert (back[name].float() - expected.float()).abs().max() <= tol, (path, name)


def test_export_is_a_deprecated_alias_of_convert(tmp_path: Path) -> None:
    _, single, _ = tiny_training_checkpoints(tmp_path, 258)
    result = run_herd("export", str(single), str(tmp_path / "hf"), "--to", "hf", "--dtype", "bfloat16")
    assert result.returncode == 0, result.stderr
    assert "herd export is deprecated: use `herd convert" in result.stderr
    assert "step_00000007" in result.stdout and (tmp_path / "hf/model.safetensors").is_file()
    missing = run_herd("convert", str(tmp_path / "single/checkpoints/step_00000009"), str(tmp_path / "x"),
                       "--to", "hf")
    assert_one_line_error(missing, "step_00000009")


def test_slow_cpu_dtype_gets_a_one_line_warning(monkeypatch):
    """--dtype bfloat16/float16 on a CPU without native arithmetic: one line with the measured cost."""
    import io

    import herd.config.host_speed as host_speed
    from herd.cli_args import warn_if_slow_dtype

    measured = {"bfloat16": 31.0, "float16": 0.9}
    monkeypatch.setattr(host_speed, "cpu_matmul_slowdown", lambda name: measured[name])
    out = io.StringIO()
    assert warn_if_slow_dtype("bf16", "cpu", out) == 31.0
    line = out.getvalue()
    assert line.count("\n") == 1 and "bfloat16" in line and "31.0x slower" in line and "float32" in line
    out = io.StringIO()
    assert warn_if_slow_dtype("float16", "cpu", out) == 0.9 and out.getvalue() == ""
    assert warn_if_slow_dtype("float32", "cpu", out) is None and warn_if_slow_dtype("bf16", "cuda", out) is None
    assert out.getvalue() == ""


def test_the_host_speed_measurement_is_real():
    from herd.config.host_speed import cpu_matmul_slowdown

    assert cpu_matmul_slowdown("bfloat16") > 0 and cpu_matmul_slowdown("float16") > 0
