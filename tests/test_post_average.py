"""`herd average`: the weighted mean of real checkpoints on disk equals the hand mean, inputs that cannot be
averaged (other shapes, another tokenizer) are refused in one line, and the output is a model herd runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from herd.checkpoint import Checkpoint, read_checkpoint, write_checkpoint
from herd.cli import main
from herd.model import Transformer, get_config, init_weights
from herd.post.average_cli import file_sha256, parse_weights, tokenizer_fingerprint
from herd.tokenizer.llama3 import Llama3Tokenizer, default_tokenizer_path


def tiny_model(path: Path, seed: int, *, ffn_dim: int = 32,
               tokenizer_file: Path | None = None) -> dict[str, torch.Tensor]:
    """A small Llama 3 (real 128K vocabulary and tokenizer) written as a Meta directory; its weights."""
    config = get_config("llama3-tiny").replace(dim=16, n_layers=2, n_heads=2, n_kv_heads=1, ffn_dim=ffn_dim)
    model = Transformer(config)
    init_weights(model, generator=torch.Generator().manual_seed(seed))
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    tokenizer = Llama3Tokenizer(tokenizer_file)
    write_checkpoint(Checkpoint(config, state, tokenizer, "meta", path), path, "meta")
    return state


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict[str, torch.Tensor]]]:
    root = tmp_path_factory.mktemp("average")
    return {name: (root / name, tiny_model(root / name, seed)) for name, seed in (("a", 1), ("b", 2), ("c", 3))}


def one_line_error(capsys: pytest.CaptureFixture[str], code: int) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err, err
    assert err[-1].startswith("herd average: error: ") and "Traceback" not in "\n".join(err)
    return err[-1]


def test_uniform_average_is_the_hand_mean(models, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (a, sa), (b, sb) = models["a"], models["b"]
    out = tmp_path / "avg"
    assert main(["average", str(a), str(b), "--out", str(out), "--to", "meta"]) == 0
    captured = capsys.readouterr()
    assert "reading 1/2" in captured.err and "reading 2/2" in captured.err and "wrote the average of 2" in captured.out
    got = read_checkpoint(out).state
    assert set(got) == set(sa)
    for key in sa:
        assert (got[key] - (sa[key] + sb[key]) / 2).abs().max() <= 1e-6, key
    assert not torch.equal(got["layers.0.attention.wq.weight"], sa["layers.0.attention.wq.weight"])
    manifest = json.loads((out / "average.json").read_text())
    assert manifest["weights"] == [0.5, 0.5] and [i["model"] for i in manifest["inputs"]] == [str(a), str(b)]
    assert manifest["output_sha256"] == {"consolidated.00.pth": file_sha256(out / "consolidated.00.pth")}
    assert manifest["format"] == "meta" and manifest["tokenizer"]["vocab size"] == 128_256
    assert sorted(p.name for p in tmp_path.iterdir()) == ["avg"]  # written beside, renamed: nothing partial left
    # a directory that holds anything (here: that average) is never written into
    line = one_line_error(capsys, main(["average", str(a), str(b), "--out", str(out), "--to", "hf"]))
    assert "is not empty" in line and not (out / "config.json").exists()


def test_weights_are_normalised_and_respected(models, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (a, sa), (b, sb), (c, sc) = models["a"], models["b"], models["c"]
    out = tmp_path / "weighted"
    assert main(["average", str(a), str(b), str(c), "--weights", "2,1", "1", "--out", str(out), "--to", "meta"]) == 0
    got = read_checkpoint(out).state
    for key in sa:
        expected = 0.5 * sa[key] + 0.25 * sb[key] + 0.25 * sc[key]
        assert (got[key] - expected).abs().max() <= 1e-6, key
    assert json.loads((out / "average.json").read_text())["weights"] == [0.5, 0.25, 0.25]
    # a zero weight leaves that model out exactly
    out0 = tmp_path / "zero"
    assert main(["average", str(a), str(b), "--weights", "1", "0", "--out", str(out0), "--to", "meta"]) == 0
    assert all(torch.equal(v, sa[k]) for k, v in read_checkpoint(out0).state.items())


def test_bad_weights_and_arguments_are_one_line(models, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = str(models["a"][0]), str(models["b"][0])
    out = str(tmp_path / "x")
    def error(*argv: str) -> str:
        return one_line_error(capsys, main(["average", *argv]))

    assert "3 weights for 2 models" in error(a, b, "--weights", "1,2,3", "--out", out)
    assert "invalid weight '-1'" in error(a, b, "--weights", "1", "-1", "--out", out)
    assert "sum to 0" in error(a, b, "--weights", "0", "0", "--out", out)
    assert "at least two models" in error(a, "--out", out)
    assert "overlaps the input" in error(a, b, "--out", a)
    assert "no model" in error(a, str(tmp_path / "nope"), "--out", out)
    assert not Path(out).exists()
    assert parse_weights(None, 4) == [0.25] * 4 and parse_weights(["1", "3"], 2) == [0.25, 0.75]


def test_mismatched_shapes_are_refused_naming_the_key(models, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    wide = tmp_path / "wide"
    tiny_model(wide, 4, ffn_dim=64)
    out = tmp_path / "out"
    line = one_line_error(capsys, main(["average", str(models["a"][0]), str(wide), "--out", str(out)]))
    assert "layers.0.feed_forward.w1.weight has shape (64, 16) there, (32, 16) in" in line
    assert not (out / "average.json").exists()


def test_different_tokenizers_are_refused(models, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # the Llama 3 tokenizer with the ids of two tokens swapped: same vocabulary size, same shapes, other ids
    lines = default_tokenizer_path().read_bytes().splitlines()
    (t1, r1), (t2, r2) = lines[1000].split(b" "), lines[1001].split(b" ")
    lines[1000], lines[1001] = t1 + b" " + r2, t2 + b" " + r1
    swapped = tmp_path / "tokenizer.model"
    swapped.write_bytes(b"\n".join(lines) + b"\n")
    other = tmp_path / "other"
    tiny_model(other, 1, tokenizer_file=swapped)
    line = one_line_error(capsys, main(["average", str(models["a"][0]), str(other), "--out", str(tmp_path / "o")]))
    assert "have different tokenizers" in line and "the token bytes differ" in line
    # the same tokenizer in another file is the same tokenizer
    copy = tmp_path / "copy.model"
    shutil.copyfile(default_tokenizer_path(), copy)
    assert tokenizer_fingerprint(Llama3Tokenizer(copy)) == tokenizer_fingerprint(Llama3Tokenizer())
    assert tokenizer_fingerprint(Llama3Tokenizer(swapped)) != tokenizer_fingerprint(Llama3Tokenizer())


def test_the_output_loads_and_generates(models, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from herd.loading import load_model

    (a, sa), (b, sb) = models["a"], models["b"]
    out = tmp_path / "hf"
    assert main(["average", str(a), str(b), "--weights", "1", "3", "--out", str(out)]) == 0  # default: Hugging Face
    assert (out / "config.json").is_file() and (out / "tokenizer.json").is_file()
    manifest = json.loads((out / "average.json").read_text())
    assert manifest["output_sha256"] == {"model.safetensors": file_sha256(out / "model.safetensors")}
    loaded = load_model(str(out))
    for key, value in loaded.model.state_dict().items():
        if key in sa:
            assert (value - (0.25 * sa[key] + 0.75 * sb[key])).abs().max() <= 1e-6, key
    capsys.readouterr()
    assert main(["generate", "--model", str(out), "--prompt", "Hello", "--max-tokens", "4", "--seed", "0"]) == 0
    assert capsys.readouterr().out.strip()
