"""The speech path of paper section 8: log-mel features, a Conformer encoder, an adapter into the
language model's input space, and BEST-RQ self-supervised pretraining of the encoder.

Shapes follow the paper: 80-dim log-mel at 16 kHz with 25 ms windows and a 10 ms hop (10 s -> 1,000
frames), stride-4 stacking plus a linear projection (40 ms frames: 250), the Conformer, then the adapter:
a convolution of kernel 3 and stride 2 (80 ms: 125), one rotary Transformer layer and a linear layer to
the text model's width. The adapter's outputs replace placeholder tokens between speech markers in the
text model's input (`insert_speech`), so the language model reads speech as a sequence of embeddings.

BEST-RQ (`BestRQ`): spans of the stacked input frames are masked (replaced by noise), a frozen random
projection and a frozen random codebook turn each unmasked frame into a code (nearest unit-norm codeword),
and the encoder learns to predict the codes of the masked frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

SAMPLE_RATE = 16_000
N_MELS = 80
WINDOW = 400      # 25 ms
HOP = 160         # 10 ms
N_FFT = 400       # one 25 ms window (Whisper's framing)


def _hz_to_mel(f: torch.Tensor) -> torch.Tensor:
    """The Slaney mel scale (librosa's default, Whisper's): linear below 1 kHz, logarithmic above."""
    linear = f / (200.0 / 3)
    return torch.where(f >= 1000.0, 15.0 + torch.log(f.clamp(min=1e-10) / 1000.0) / (math.log(6.4) / 27), linear)


def _mel_to_hz(m: torch.Tensor) -> torch.Tensor:
    linear = m * (200.0 / 3)
    return torch.where(m >= 15.0, 1000.0 * torch.exp((math.log(6.4) / 27) * (m - 15.0)), linear)


def mel_filterbank(n_mels: int = N_MELS, n_fft: int = N_FFT, sample_rate: int = SAMPLE_RATE,
                   f_min: float = 0.0, f_max: float | None = None) -> torch.Tensor:
    """[n_mels, n_fft // 2 + 1] triangular filters on the Slaney mel scale, each normalised to equal
    area (librosa's and Whisper's filters)."""
    f_max = f_max or sample_rate / 2
    lo, hi = _hz_to_mel(torch.tensor(f_min, dtype=torch.float64)), _hz_to_mel(torch.tensor(f_max, dtype=torch.float64))
    edges = _mel_to_hz(torch.linspace(float(lo), float(hi), n_mels + 2, dtype=torch.float64))
    bins = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins - lower) / (centre - lower)
    falling = (upper - bins) / (upper - centre)
    filters = torch.clamp(torch.minimum(rising, falling), min=0.0)
    filters *= (2.0 / (upper - lower))          # equal area per filter
    return filters.float()


def log_mel(waveform: torch.Tensor, filters: torch.Tensor | None = None) -> torch.Tensor:
    """[B, samples] at 16 kHz -> [B, samples // 160, 80] log-mel frames (Whisper's framing: centred
    windows, the last frame dropped, so 10 s gives exactly 1,000 frames), log10 with an 8-decade floor
    below the utterance's maximum, scaled to roughly [-1, 1]."""
    if waveform.dim() == 1:
        waveform = waveform[None]
    filters = mel_filterbank() if filters is None else filters
    window = torch.hann_window(WINDOW, device=waveform.device)
    spec = torch.stft(waveform.float(), N_FFT, HOP, WINDOW, window, center=True, return_complex=True)
    power = spec[..., :-1].abs() ** 2                                    # [B, freq, frames]
    mel = filters.to(waveform.device) @ power
    logs = torch.clamp(mel, min=1e-10).log10()
    logs = torch.maximum(logs, logs.amax(dim=(1, 2), keepdim=True) - 8.0)
    return ((logs + 4.0) / 4.0).transpose(1, 2)


def rotary(x: torch.Tensor, positions: torch.Tensor, theta: float = 10_000.0) -> torch.Tensor:
    """Rotate [B, H, T, D] by position (pairs of halves)."""
    half = x.shape[-1] // 2
    freqs = theta ** (-torch.arange(half, device=x.device, dtype=torch.float32) / half)
    angles = positions.float()[:, None] * freqs[None]
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    a, b = x[..., :half], x[..., half:]
    return torch.cat([a * cos - b * sin, a * sin + b * cos], dim=-1)


class RotarySelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, padding: torch.Tensor | None = None) -> torch.Tensor:
        batch, length, dim = x.shape
        q, k, v = self.qkv(x).view(batch, length, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        positions = torch.arange(length, device=x.device)
        q, k = rotary(q, positions), rotary(k, positions)
        mask = None if padding is None else ~padding[:, None, None, :]   # padding: True where padded
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out(out.transpose(1, 2).reshape(batch, length, dim))


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.up = nn.Linear(dim, hidden)
        self.down = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.silu(self.up(self.norm(x))))


class ConvModule(nn.Module):
    """Pointwise conv + GLU, depthwise conv (kernel 7), norm, swish, pointwise conv."""

    def __init__(self, dim: int, kernel: int = 7) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.pointwise_in = nn.Conv1d(dim, 2 * dim, 1)
        self.depthwise = nn.Conv1d(dim, dim, kernel, padding=kernel // 2, groups=dim)
        self.depth_norm = nn.GroupNorm(1, dim)
        self.pointwise_out = nn.Conv1d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.glu(self.pointwise_in(self.norm(x).transpose(1, 2)), dim=1)
        y = self.pointwise_out(F.silu(self.depth_norm(self.depthwise(y))))
        return y.transpose(1, 2)


class ConformerBlock(nn.Module):
    """Macaron Conformer: half FFN, rotary self-attention, convolution, half FFN, final norm."""

    def __init__(self, dim: int, heads: int, ffn_mult: int = 4, kernel: int = 7) -> None:
        super().__init__()
        self.ffn1 = FeedForward(dim, ffn_mult * dim)
        self.attention_norm = nn.LayerNorm(dim)
        self.attention = RotarySelfAttention(dim, heads)
        self.conv = ConvModule(dim, kernel)
        self.ffn2 = FeedForward(dim, ffn_mult * dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, padding: torch.Tensor | None = None) -> torch.Tensor:
        x = x + 0.5 * self.ffn1(x)
        x = x + self.attention(self.attention_norm(x), padding)
        x = x + self.conv(x)
        x = x + 0.5 * self.ffn2(x)
        return self.norm(x)


@dataclass(frozen=True)
class SpeechConfig:
    """The paper's encoder is 1B parameters (24 Conformer layers, width 1,536); the defaults here are a
    CPU-sized one with the same structure."""

    dim: int = 256
    layers: int = 4
    heads: int = 4
    stack: int = 4          # 10 ms frames stacked into 40 ms
    kernel: int = 7
    adapter_stride: int = 2  # 40 ms -> 80 ms


class SpeechEncoder(nn.Module):
    """log-mel [B, F, 80] -> Conformer states [B, F // 4, dim] (40 ms each)."""

    def __init__(self, config: SpeechConfig) -> None:
        super().__init__()
        self.config = config
        self.stacked_dim = N_MELS * config.stack
        self.input = nn.Linear(self.stacked_dim, config.dim)
        self.layers = nn.ModuleList(ConformerBlock(config.dim, config.heads, kernel=config.kernel)
                                    for _ in range(config.layers))

    def stack(self, mel: torch.Tensor) -> torch.Tensor:
        """[B, F, 80] -> [B, F // stack, 80 * stack] (a partial last group is dropped)."""
        batch, frames, bins = mel.shape
        keep = frames - frames % self.config.stack
        return mel[:, :keep].reshape(batch, keep // self.config.stack, bins * self.config.stack)

    def encode_stacked(self, stacked: torch.Tensor, padding: torch.Tensor | None = None) -> torch.Tensor:
        x = self.input(stacked)
        for layer in self.layers:
            x = layer(x, padding)
        return x

    def forward(self, mel: torch.Tensor, padding: torch.Tensor | None = None) -> torch.Tensor:
        return self.encode_stacked(self.stack(mel), padding)


class SpeechAdapter(nn.Module):
    """Conformer states -> language-model embeddings: conv (kernel 3, stride 2: 80 ms), one rotary
    Transformer layer, a linear map to the text width."""

    def __init__(self, config: SpeechConfig, text_dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(config.dim, config.dim, 3, stride=config.adapter_stride, padding=1)
        self.attention_norm = nn.LayerNorm(config.dim)
        self.attention = RotarySelfAttention(config.dim, config.heads)
        self.ffn = FeedForward(config.dim, 4 * config.dim)
        self.proj = nn.Linear(config.dim, text_dim)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        x = self.conv(states.transpose(1, 2)).transpose(1, 2)
        x = x + self.attention(self.attention_norm(x))
        x = x + self.ffn(x)
        return self.proj(x)


def insert_speech(embeddings: torch.Tensor, tokens: torch.Tensor, placeholder: int,
                  speech: torch.Tensor) -> torch.Tensor:
    """Replace, row by row, the run of `placeholder` tokens (between the speech markers) by the
    adapter's outputs [B, S, dim]: row b must hold exactly S placeholders."""
    slots = tokens == placeholder
    counts = slots.sum(dim=1)
    if bool((counts != speech.shape[1]).any()):
        raise ValueError(f"each row needs {speech.shape[1]} speech placeholder tokens, got {counts.tolist()}")
    out = embeddings.clone()
    out[slots] = speech.reshape(-1, speech.shape[-1]).to(out.dtype)
    return out


class BestRQ(nn.Module):
    """BEST-RQ: predict frozen random-projection codes of masked input frames.

    Each stacked frame is projected by a frozen random matrix and l2-normalised; its target is the
    nearest of `codebook_size` frozen random unit vectors. Spans of `span` frames, starting at a
    `mask_prob` fraction of positions, are replaced by small noise before the encoder; a linear head
    on the encoder's states predicts the masked frames' codes."""

    def __init__(self, encoder: SpeechEncoder, codebook_size: int = 1024, code_dim: int = 16,
                 mask_prob: float = 0.02, span: int = 10, seed: int = 0) -> None:
        super().__init__()
        self.encoder = encoder
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("projection", torch.nn.init.xavier_normal_(
            torch.empty(encoder.stacked_dim, code_dim), generator=g))
        self.register_buffer("codebook", F.normalize(torch.randn(codebook_size, code_dim, generator=g), dim=-1))
        self.head = nn.Linear(encoder.config.dim, codebook_size)
        self.mask_prob, self.span = mask_prob, span

    @torch.no_grad()
    def targets(self, stacked: torch.Tensor) -> torch.Tensor:
        normed = (stacked - stacked.mean(dim=1, keepdim=True)) / (stacked.std(dim=1, keepdim=True) + 1e-5)
        codes = F.normalize(normed @ self.projection, dim=-1)
        return (codes @ self.codebook.T).argmax(dim=-1)

    def mask(self, batch: int, length: int, generator: torch.Generator | None = None) -> torch.Tensor:
        starts = torch.rand(batch, length, generator=generator) < self.mask_prob
        masked = torch.zeros(batch, length, dtype=torch.bool)
        for offset in range(self.span):
            masked[:, offset:] |= starts[:, :length - offset]
        return masked

    def loss(self, mel: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, float]:
        """Cross-entropy on the masked frames' codes, and the accuracy there."""
        stacked = self.encoder.stack(mel)
        targets = self.targets(stacked)
        masked = self.mask(*stacked.shape[:2], generator=generator).to(stacked.device)
        if not bool(masked.any()):
            masked[:, : self.span] = True
        noise = 0.1 * torch.randn(stacked.shape, generator=generator).to(stacked.device)
        inputs = torch.where(masked[..., None], noise, stacked)
        logits = self.head(self.encoder.encode_stacked(inputs))[masked]
        loss = F.cross_entropy(logits, targets[masked])
        return loss, float((logits.argmax(-1) == targets[masked]).float().mean())


def frames_after(samples: int, config: SpeechConfig) -> tuple[int, int, int]:
    """(mel frames, encoder frames, adapter frames) for `samples` of 16 kHz audio."""
    mel = samples // HOP
    encoder = mel // config.stack
    adapter = math.floor((encoder + 2 - 3) / config.adapter_stride) + 1
    return mel, encoder, adapter
