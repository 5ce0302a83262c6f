"""Meta and Hugging Face checkpoint formats: round trips, transformers interop, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import LlamaConfig, LlamaForCausalLM

from herd.checkpoint.errors import CheckpointError
from herd.checkpoint.formats import detect_format, read_checkpoint
from herd.checkpoint.hf import config_to_hf, read_hf, write_hf
from herd.checkpoint.meta import read_meta, write_meta
from herd.checkpoint.validate import load_state_dict_checked
from herd.model import ModelConfig, RopeScaling, Transformer, init_weights

VOCAB = 384
TOKENS = torch.randint(0, VOCAB, (1, 40), generator=torch.Generator().manual_seed(0))


def make(config: ModelConfig, seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    model = Transformer(config)
    init_weights(model)
    return model.eval()


def small_config(**changes) -> ModelConfig:  # type: ignore[no-untyped-def]
    base = ModelConfig(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=VOCAB, ffn_dim=128,
                       rope_scaling=RopeScaling(factor=8.0, original_context=32), max_seq_len=512)
    return base.replace(**changes)


def logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        out = model(TOKENS)
    return out.logits if hasattr(out, "logits") else out


def herd_from(config: ModelConfig, state: dict[str, torch.Tensor]) -> Transformer:
    model = Transformer(config).eval()
    load_state_dict_checked(model, state, "test")
    return model


@pytest.mark.parametrize("tied", [False, True])
def test_herd_to_hf_loads_in_transformers(tmp_path: Path, tied: bool) -> None:
    config = small_config(tie_embeddings=tied)
    model = make(config)
    write_hf(tmp_path, config, model.state_dict())
    hf = LlamaForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    assert (logits(hf) - logits(model)).abs().max().item() <= 1e-4


def test_hf_to_herd_from_transformers_save(tmp_path: Path) -> None:
    config = small_config()
    hf_cfg = {k: v for k, v in config_to_hf(config).items() if k not in ("architectures", "model_type", "torch_dtype")}
    torch.manual_seed(1)
    hf = LlamaForCausalLM(LlamaConfig(**hf_cfg)).eval()
    hf.save_pretrained(tmp_path)
    read_config, state = read_hf(tmp_path)
    assert read_config == config.replace(ffn_dim_multiplier=None, multiple_of=None)
    assert (logits(herd_from(read_config, state)) - logits(hf)).abs().max().item() <= 1e-4


def test_sharded_hf_round_trip(tmp_path: Path) -> None:
    config = small_config()
    model = make(config)
    write_hf(tmp_path, config, model.state_dict(), max_shard_bytes=100_000)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    _, state = read_hf(tmp_path)
    for key, tensor in model.state_dict().items():
        assert torch.equal(state[key], tensor), key
    hf = LlamaForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    assert (logits(hf) - logits(model)).abs().max().item() <= 1e-4


@pytest.mark.parametrize("shards", [1, 2, 4])
def test_meta_round_trip(tmp_path: Path, shards: int) -> None:
    config = small_config(n_kv_heads=2)  # 4 shards > 2 KV heads: KV heads are replicated per rank
    model = make(config)
    write_meta(tmp_path, config, model.state_dict(), num_shards=shards)
    assert len(list(tmp_path.glob("consolidated.*.pth"))) == shards
    read_config, state = read_meta(tmp_path)
    assert read_config == config.replace(ffn_dim_multiplier=None, multiple_of=1)
    for key, tensor in model.state_dict().items():
        assert torch.equal(state[key], tensor), key


def test_meta_shards_split_like_fairscale(tmp_path: Path) -> None:
    config = small_config()
    state = make(config).state_dict()
    write_meta(tmp_path, config, state, num_shards=2)
    shard0 = torch.load(tmp_path / "consolidated.00.pth")
    shard1 = torch.load(tmp_path / "consolidated.01.pth")
    wq = state["layers.0.attention.wq.weight"]
    assert torch.equal(shard1["layers.0.attention.wq.weight"], wq[32:])  # column parallel: rows
    wo = state["layers.0.attention.wo.weight"]
    assert torch.equal(shard0["layers.0.attention.wo.weight"], wo[:, :32])  # row parallel: columns
    assert torch.equal(shard1["tok_embeddings.weight"], state["tok_embeddings.weight"][VOCAB // 2 :])  # vocab
    assert torch.equal(shard0["norm.weight"], shard1["norm.weight"])


def test_meta_params_json_reference_keys(tmp_path: Path) -> None:
    config = ModelConfig.from_meta_params(
        {"dim": 64, "n_layers": 1, "n_heads": 4, "n_kv_heads": 2, "vocab_size": VOCAB, "multiple_of": 32,
         "ffn_dim_multiplier": 1.3, "norm_eps": 1e-5, "rope_theta": 500000.0, "use_scaled_rope": True}
    )
    assert config.ffn_dim == 32 * -(-int(1.3 * int(2 * 4 * 64 / 3)) // 32)
    assert config.rope_scaling == RopeScaling(factor=8.0)
    write_meta(tmp_path, config, make(config).state_dict())
    params = json.loads((tmp_path / "params.json").read_text())
    assert params["ffn_dim_multiplier"] == 1.3 and params["multiple_of"] == 32 and params["use_scaled_rope"]


def test_detect_format(tmp_path: Path) -> None:
    config = small_config()
    write_meta(tmp_path / "meta", config, make(config).state_dict())
    write_hf(tmp_path / "hf", config, make(config).state_dict())
    assert detect_format(tmp_path / "meta") == "meta"
    assert detect_format(tmp_path / "hf") == "hf"
    (tmp_path / "x.bin").write_bytes(b"nope")
    with pytest.raises(CheckpointError, match="not a GGUF"):
        detect_format(tmp_path / "x.bin")
    with pytest.raises(CheckpointError, match="neither a Meta"):
        detect_format(tmp_path)
    with pytest.raises(CheckpointError, match="not found"):
        detect_format(tmp_path / "missing")


def test_params_json_that_does_not_match_the_weights(tmp_path: Path) -> None:
    config = small_config()
    write_meta(tmp_path, config, make(config).state_dict())
    params = json.loads((tmp_path / "params.json").read_text())
    params["dim"] = 128
    (tmp_path / "params.json").write_text(json.dumps(params))
    with pytest.raises(CheckpointError, match=r"tok_embeddings.weight has shape \(384, 64\).*\(384, 128\)"):
        read_checkpoint(tmp_path)
    params["n_layers"] = 3
    params["dim"] = 64
    (tmp_path / "params.json").write_text(json.dumps(params))
    with pytest.raises(CheckpointError, match="missing tensors: layers.2"):
        read_checkpoint(tmp_path)


def test_missing_and_broken_meta_files(tmp_path: Path) -> None:
    config = small_config()
    write_meta(tmp_path, config, make(config).state_dict(), num_shards=2)
    (tmp_path / "consolidated.00.pth").unlink()
    with pytest.raises(CheckpointError, match=r"shards \[1\]; expected 0..0"):
        read_meta(tmp_path)
    (tmp_path / "consolidated.01.pth").write_bytes(b"garbage")
    (tmp_path / "consolidated.01.pth").rename(tmp_path / "consolidated.00.pth")
    with pytest.raises(CheckpointError, match="cannot read"):
        read_meta(tmp_path)
    (tmp_path / "params.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="params.json is invalid"):
        read_meta(tmp_path)


def test_hf_wrong_shaped_tensor_and_missing_shard(tmp_path: Path) -> None:
    config = small_config()
    write_hf(tmp_path, config, make(config).state_dict())
    tensors = load_file(tmp_path / "model.safetensors")
    tensors["model.layers.1.mlp.up_proj.weight"] = torch.zeros(100, 64)
    save_file(tensors, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"layers.1.feed_forward.w3.weight has shape \(100, 64\)"):
        read_checkpoint(tmp_path)

    write_hf(tmp_path / "sharded", config, make(config).state_dict(), max_shard_bytes=100_000)
    next((tmp_path / "sharded").glob("model-00002-*.safetensors")).unlink()
    with pytest.raises(CheckpointError, match="shard model-00002.* is missing"):
        read_hf(tmp_path / "sharded")


def test_unsupported_hf_configs(tmp_path: Path) -> None:
    config = small_config()
    write_hf(tmp_path, config, make(config).state_dict())
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["rope_scaling"] = {"rope_type": "yarn", "factor": 4.0}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="unsupported RoPE scaling type 'yarn'"):
        read_hf(tmp_path)
    cfg.pop("rope_scaling")
    cfg["attention_bias"] = True
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="biases"):
        read_hf(tmp_path)


def test_tokenizer_that_does_not_fit_the_model(tmp_path: Path, llama3_tokenizer) -> None:
    from herd.tokenizer import TokenizerError, save_tokenizer

    config = small_config()
    write_hf(tmp_path, config, make(config).state_dict())
    save_tokenizer(llama3_tokenizer, tmp_path, "hf")
    with pytest.raises(TokenizerError, match="128256 tokens but the model's vocabulary has only 384 rows"):
        read_checkpoint(tmp_path)


def test_a_tied_models_own_state_dict_loads_and_a_different_head_does_not() -> None:
    """torch lists a tied matrix under both names; a training checkpoint of a tied model must load back
    (the demo's model is tied), while an output.weight that differs from the embedding is an error."""
    from herd.checkpoint import check_state_dict, load_state_dict_checked
    from herd.model import Transformer
    from herd.model.config import get_config

    config = get_config("llama3-demo", vocab_size=300)
    state = {k: v.clone() for k, v in Transformer(config).state_dict().items()}
    assert "output.weight" in state
    fresh = Transformer(config)
    load_state_dict_checked(fresh, state, "tied checkpoint")
    assert fresh.output.weight is fresh.tok_embeddings.weight
    assert torch.equal(fresh.tok_embeddings.weight, state["tok_embeddings.weight"])
    state["output.weight"] = state["output.weight"] + 1
    with pytest.raises(CheckpointError, match="unexpected tensors: output.weight"):
        check_state_dict(config, state, "tied checkpoint")
