"""The speech path (paper section 8): log-mel against Whisper's feature extractor, the paper's frame
rates through the Conformer and the adapter, speech embeddings in the text input, BEST-RQ."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from herd.multimodal.speech import (
    BestRQ,
    SpeechAdapter,
    SpeechConfig,
    SpeechEncoder,
    frames_after,
    insert_speech,
    log_mel,
    mel_filterbank,
)


def _tone(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16_000)) / 16_000
    return (0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(len(t))).astype(np.float32)


def _notes(seconds: float, seed: int) -> np.ndarray:
    """Held notes of 0.4 s from a few pitches: a masked span is predictable from its neighbours."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(0.4 * 16_000)) / 16_000
    parts = [0.3 * np.sin(2 * np.pi * rng.choice([220, 330, 495, 742]) * t) for _ in range(int(seconds / 0.4))]
    return (np.concatenate(parts) + 0.002 * rng.standard_normal(len(parts) * len(t))).astype(np.float32)


def test_log_mel_matches_whisper_feature_extraction() -> None:
    from transformers import WhisperFeatureExtractor
    from transformers.audio_utils import mel_filter_bank

    ref_filters = mel_filter_bank(num_frequency_bins=201, num_mel_filters=80, min_frequency=0.0,
                                  max_frequency=8000.0, sampling_rate=16000, norm="slaney", mel_scale="slaney")
    np.testing.assert_allclose(mel_filterbank().numpy().T, ref_filters, atol=1e-7)
    wav = _tone(10.0)
    extractor = WhisperFeatureExtractor(feature_size=80, sampling_rate=16000, hop_length=160, chunk_length=10,
                                        n_fft=400)
    ref = extractor(wav, sampling_rate=16000, return_tensors="np").input_features[0]
    ours = log_mel(torch.from_numpy(wav))[0].numpy().T
    assert ours.shape == ref.shape == (80, 1000)       # 10 s -> 1,000 frames of 10 ms
    np.testing.assert_allclose(ours, ref, atol=1e-4)


def test_ten_seconds_become_1000_then_250_then_125_frames() -> None:
    config = SpeechConfig(dim=64, layers=2, heads=4)
    encoder, adapter = SpeechEncoder(config), SpeechAdapter(config, text_dim=96)
    mel = log_mel(torch.from_numpy(_tone(10.0)))
    with torch.no_grad():
        states = encoder(mel)
        out = adapter(states)
    assert mel.shape == (1, 1000, 80) and states.shape == (1, 250, 64) and out.shape == (1, 125, 96)
    assert frames_after(160_000, config) == (1000, 250, 125)
    assert frames_after(16_000 * 3 + 100, config) == (300, 75, 38)


def test_speech_embeddings_replace_the_placeholders_between_markers() -> None:
    tokens = torch.tensor([[1, 7, 9, 9, 9, 8, 2], [1, 7, 9, 9, 9, 8, 3]])   # 7/8 = markers, 9 = placeholder
    embeddings = torch.zeros(2, 7, 4)
    speech = torch.arange(24, dtype=torch.float32).view(2, 3, 4)
    out = insert_speech(embeddings, tokens, 9, speech)
    assert torch.equal(out[:, 2:5], speech) and torch.equal(out[:, :2], embeddings[:, :2])
    with pytest.raises(ValueError, match="needs 2 speech placeholder"):
        insert_speech(embeddings, tokens, 9, speech[:, :2])


def test_best_rq_targets_are_fixed_and_the_encoder_learns_to_predict_them() -> None:
    torch.manual_seed(0)
    config = SpeechConfig(dim=64, layers=2, heads=4)
    model = BestRQ(SpeechEncoder(config), codebook_size=32, mask_prob=0.1, span=4)
    mel = torch.stack([log_mel(torch.from_numpy(_notes(2.0, seed=s)))[0] for s in range(4)])
    stacked = model.encoder.stack(mel)
    assert torch.equal(model.targets(stacked), model.targets(stacked.clone()))
    assert not model.projection.requires_grad and not model.codebook.requires_grad
    masked = model.mask(4, 50, torch.Generator().manual_seed(0))
    assert 0.1 < masked.float().mean() < 0.6          # spans of 4 from 10% of positions
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for step in range(60):
        loss, _ = model.loss(mel, torch.Generator().manual_seed(step))
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(float(loss.detach()))
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])
