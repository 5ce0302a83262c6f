// The int4 x int8 linear's arithmetic, without ATen: y[M, N] = x[M, K] @ dequant(W[N, K])^T.
//
// Why a header of its own: int4_linear.cpp wraps it as a torch op, and tests/kernels/int4_core_test.cpp
// compiles it alone, so the ARM NEON path can be cross-compiled and run under a user-mode emulator on a
// machine that has no aarch64 torch (tests/test_cpu_kernels_neon.py). Include it from one translation
// unit per binary: everything is in an anonymous namespace, as it was in the one .cpp file, so the
// compiler sees exactly the code (and linkage) it did before.
//
// Why the kernel: batch-1 decode reads every weight once per token, and ATen's int4 kernel
// (_weight_int4pack_mm_for_cpu) turns every 4-bit weight into a float before the multiply, which
// keeps it compute-bound at ~10 GB/s of weights per core. This kernel does what llama.cpp's
// Q4_1 x Q8_1 does: the activations are quantized to int8 per group of 32 (one scale d per group,
// plus S = d * sum of the group's int8 values), and the 4-bit weights meet them in integer dot products
// (AVX512-VNNI vpdpbusd: 64 u8 x s8 products per instruction; on AVX2, vpmaddubsw + vpmaddwd; on ARM,
// sdot where the CPU has dot-product instructions, else smull + smlal). With w = q * s + m per group:
//     sum_k w_k x_k = s * d * sum_k q_k xq_k + m * S.
//
// Layout (herd/infer/cpu_kernels.py packs it): rows in tiles of 16, one i32 lane per row.
//   packed  uint8 [N/16, K/32, 256]: for block b in 0..3, byte (b*64 + row*4 + kk) holds, in its low
//           nibble, q[row, 32g + 4b + kk] and in its high nibble q[row, 32g + 16 + 4b + kk].
//   scales  fp16  [N/16, K/32, 2, 16]: the 16 rows' scale s, then their minimum m (IEEE half bits).
// N is padded to a multiple of 16 with zero rows; the output has exactly N columns.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "half.h"

// One path per build, picked by what the compiler targets (-march=native, or -march=haswell when
// HERD_INT4_PATH=avx2 asks for the AVX2 build on a bigger CPU; on aarch64 -march=armv8.2-a+dotprod
// or -march=armv8-a, see cpu_kernels.py): AVX512-VNNI, else AVX2 (+FMA, F16C: every x86 CPU since
// 2013), else NEON on AArch64 (with sdot where the target has the dot-product extension), else the
// portable loop. HERD_INT4_PORTABLE forces the portable loop.
#if !defined(HERD_INT4_PORTABLE) && defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__)
#include <immintrin.h>
#define HERD_INT4_VNNI 1
#define HERD_INT4_AVX2 0
#define HERD_INT4_NEON 0
#elif !defined(HERD_INT4_PORTABLE) && defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#define HERD_INT4_VNNI 0
#define HERD_INT4_AVX2 1
#define HERD_INT4_NEON 0
#elif !defined(HERD_INT4_PORTABLE) && defined(__ARM_NEON) && defined(__aarch64__)
#include <arm_neon.h>
#define HERD_INT4_VNNI 0
#define HERD_INT4_AVX2 0
#define HERD_INT4_NEON 1
#else
#define HERD_INT4_VNNI 0
#define HERD_INT4_AVX2 0
#define HERD_INT4_NEON 0
#endif

#if HERD_INT4_NEON && defined(__ARM_FEATURE_DOTPROD)
#define HERD_INT4_NEON_DOTPROD 1
#else
#define HERD_INT4_NEON_DOTPROD 0
#endif

namespace herd_int4 {
namespace {

constexpr int64_t kTile = 16;   // output rows per tile (one 32-bit lane each)
constexpr int64_t kGroup = 32;  // weights per scale/minimum
constexpr int64_t kMBlock = 4;  // activation rows that share one unpacked weight tile

// Activations, quantized per group: xq int8 [M, K], d (scale) and S = d * sum(xq) float [M, K/32].
struct QuantizedActivations {
  std::vector<int8_t> xq;
  std::vector<float> d;
  std::vector<float> sum;
};

inline QuantizedActivations quantize_activations(const float* x, int64_t m_rows, int64_t k) {
  const int64_t groups = k / kGroup;
  QuantizedActivations out{std::vector<int8_t>(m_rows * k), std::vector<float>(m_rows * groups),
                           std::vector<float>(m_rows * groups)};
  for (int64_t i = 0; i < m_rows * groups; ++i) {
    const float* xg = x + i * kGroup;
    float amax = 0.f;
    for (int64_t j = 0; j < kGroup; ++j) amax = std::max(amax, std::fabs(xg[j]));
    const float d = amax / 127.f;
    const float inv = d > 0.f ? 1.f / d : 0.f;
    int8_t* q = out.xq.data() + i * kGroup;
    int32_t total = 0;
    for (int64_t j = 0; j < kGroup; ++j) {
      q[j] = static_cast<int8_t>(std::nearbyint(xg[j] * inv));
      total += q[j];
    }
    out.d[i] = d;
    // the sum of the *quantized* group: then the result is exactly dequant(W) . dequant(x), whose
    // error is sum w_k e_k with centred w; the exact float sum would leave s * sum q_k e_k, q in 0..15
    out.sum[i] = d * static_cast<float>(total);
  }
  return out;
}

using herd_kernels_common::half_to_float;

#if HERD_INT4_VNNI
// One tile of 16 output rows for MB activation rows (MB <= kMBlock, a compile-time constant so the
// accumulators stay in registers).
template <int MB>
void tile_vnni(const uint8_t* packed, const uint16_t* scales, const QuantizedActivations& a, int64_t m0,
               int64_t k, float* y, int64_t n, int64_t row0) {
  const int64_t groups = k / kGroup;
  const __m512i low_nibbles = _mm512_set1_epi8(0x0F);
  __m512 acc[MB];
  for (int i = 0; i < MB; ++i) acc[i] = _mm512_setzero_ps();
  for (int64_t g = 0; g < groups; ++g) {
    const uint8_t* block = packed + g * 256;
    __m512i w[8];
    for (int b = 0; b < 4; ++b) {
      const __m512i v = _mm512_loadu_si512(block + b * 64);
      w[b] = _mm512_and_si512(v, low_nibbles);
      w[b + 4] = _mm512_and_si512(_mm512_srli_epi16(v, 4), low_nibbles);
    }
    const uint16_t* sg = scales + g * 32;
    const __m512 s = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(sg)));
    const __m512 mn = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(sg + 16)));
    for (int i = 0; i < MB; ++i) {
      const int64_t row = m0 + i;
      const int8_t* xq = a.xq.data() + row * k + g * kGroup;
      int32_t chunk[8];
      std::memcpy(chunk, xq, 32);
      __m512i dot = _mm512_setzero_si512();
      for (int c = 0; c < 8; ++c) dot = _mm512_dpbusd_epi32(dot, w[c], _mm512_set1_epi32(chunk[c]));
      const float d = a.d[row * groups + g];
      const float total = a.sum[row * groups + g];
      acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(s, _mm512_set1_ps(d)), acc[i]);
      acc[i] = _mm512_fmadd_ps(mn, _mm512_set1_ps(total), acc[i]);
    }
  }
  const int64_t valid = std::min<int64_t>(kTile, n - row0);
  const __mmask16 mask = static_cast<__mmask16>((1u << valid) - 1u);
  for (int i = 0; i < MB; ++i) _mm512_mask_storeu_ps(y + (m0 + i) * n + row0, mask, acc[i]);
}
#endif

#if HERD_INT4_AVX2
// The AVX2 tile (llama.cpp's Q4_1 x Q8_1 AVX2 arithmetic): a 256-bit register holds 8 rows x 4 bytes,
// so the 16-row tile is two halves. Without VNNI the u8 x s8 dot is vpmaddubsw (adjacent pairs summed
// to int16) then vpmaddwd with ones (pairs of int16 to int32): 4 products per row lane, as vpdpbusd.
// The int16 sums cannot saturate: a pair is at most 2 * 15 * 127 = 3,810, and the 8 pairs of a
// group's half add up to at most 30,480 < 32,767 before one vpmaddwd widens them.
template <int MB>
void tile_avx2(const uint8_t* packed, const uint16_t* scales, const QuantizedActivations& a, int64_t m0,
               int64_t k, float* y, int64_t n, int64_t row0) {
  const int64_t groups = k / kGroup;
  const __m256i low_nibbles = _mm256_set1_epi8(0x0F);
  const __m256i ones = _mm256_set1_epi16(1);
  __m256 acc[MB][2];
  for (int i = 0; i < MB; ++i) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
  for (int64_t g = 0; g < groups; ++g) {
    const uint8_t* block = packed + g * 256;
    const uint16_t* sg = scales + g * 32;
    __m256i w[2][8];
    __m256 s[2], mn[2];
    for (int h = 0; h < 2; ++h) {
      for (int b = 0; b < 4; ++b) {
        const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(block + b * 64 + h * 32));
        w[h][b] = _mm256_and_si256(v, low_nibbles);
        w[h][b + 4] = _mm256_and_si256(_mm256_srli_epi16(v, 4), low_nibbles);
      }
      s[h] = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(sg + 8 * h)));
      mn[h] = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(sg + 16 + 8 * h)));
    }
    for (int i = 0; i < MB; ++i) {
      const int64_t row = m0 + i;
      const int8_t* xq = a.xq.data() + row * k + g * kGroup;
      int32_t chunk[8];
      std::memcpy(chunk, xq, 32);
      __m256i x[8];
      for (int c = 0; c < 8; ++c) x[c] = _mm256_set1_epi32(chunk[c]);
      const __m256 d = _mm256_set1_ps(a.d[row * groups + g]);
      const __m256 total = _mm256_set1_ps(a.sum[row * groups + g]);
      for (int h = 0; h < 2; ++h) {
        __m256i pairs = _mm256_maddubs_epi16(w[h][0], x[0]);
        for (int c = 1; c < 8; ++c) pairs = _mm256_add_epi16(pairs, _mm256_maddubs_epi16(w[h][c], x[c]));
        const __m256i dot = _mm256_madd_epi16(pairs, ones);
        acc[i][h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_mul_ps(s[h], d), acc[i][h]);
        acc[i][h] = _mm256_fmadd_ps(mn[h], total, acc[i][h]);
      }
    }
  }
  const int64_t valid = std::min<int64_t>(kTile, n - row0);
  for (int i = 0; i < MB; ++i) {
    float* out = y + (m0 + i) * n + row0;
    if (valid == kTile) {
      _mm256_storeu_ps(out, acc[i][0]);
      _mm256_storeu_ps(out + 8, acc[i][1]);
    } else {
      alignas(32) float lanes[kTile];
      _mm256_store_ps(lanes, acc[i][0]);
      _mm256_store_ps(lanes + 8, acc[i][1]);
      std::memcpy(out, lanes, valid * sizeof(float));
    }
  }
}
#endif

#if HERD_INT4_NEON
// The AArch64 tile: a 128-bit register holds 4 rows x 4 bytes, so the 16-row tile is four quarters
// (rows 4h..4h+3 are bytes 16h..16h+15 of each 64-byte block). The nibbles 0..15 fit in int8, so they
// meet the int8 activations in *signed* dot products:
//   - with the dot-product extension (ARMv8.2 +dotprod, every Apple M-series and Graviton 2+), sdot:
//     one instruction adds 4 products into each row's i32 lane, as vpdpbusd does; the 4 activation
//     bytes come from a lane of the row's loaded group (vdotq_laneq_s32), so nothing is broadcast;
//   - without it (plain ARMv8.0, e.g. Cortex-A53/A72), smull + smlal: the 8 chunks' products per
//     int16 lane add up to at most 8 * 15 * 128 = 15,360 < 32,767, then saddlp widens the pairs to
//     i32 and addp sums each row's two pairs.
// The float part is the AVX2 tile's: acc += float(dot) * (s * d), then acc += m * S, in fused
// multiply-adds.
#if HERD_INT4_NEON_DOTPROD
inline int32x4_t quarter_dot(const int8x16_t (&w)[8], int8x16_t x_low, int8x16_t x_high) {
  int32x4_t dot = vdupq_n_s32(0);
  dot = vdotq_laneq_s32(dot, w[0], x_low, 0);   // low nibbles of block b meet xq[4b .. 4b+3]
  dot = vdotq_laneq_s32(dot, w[1], x_low, 1);
  dot = vdotq_laneq_s32(dot, w[2], x_low, 2);
  dot = vdotq_laneq_s32(dot, w[3], x_low, 3);
  dot = vdotq_laneq_s32(dot, w[4], x_high, 0);  // high nibbles of block b meet xq[16 + 4b .. 16 + 4b+3]
  dot = vdotq_laneq_s32(dot, w[5], x_high, 1);
  dot = vdotq_laneq_s32(dot, w[6], x_high, 2);
  dot = vdotq_laneq_s32(dot, w[7], x_high, 3);
  return dot;
}
#else
inline int32x4_t quarter_dot(const int8x16_t (&w)[8], int8x16_t x_low, int8x16_t x_high) {
  int32_t chunk[8];
  vst1q_s8(reinterpret_cast<int8_t*>(chunk), x_low);
  vst1q_s8(reinterpret_cast<int8_t*>(chunk + 4), x_high);
  // products of rows 0-1 (low 8 bytes of each weight register) and rows 2-3 (high 8 bytes), int16
  int16x8_t rows01 = vdupq_n_s16(0), rows23 = vdupq_n_s16(0);
  for (int c = 0; c < 8; ++c) {
    const int8x8_t x = vreinterpret_s8_s32(vdup_n_s32(chunk[c]));
    rows01 = vmlal_s8(rows01, vget_low_s8(w[c]), x);
    rows23 = vmlal_s8(rows23, vget_high_s8(w[c]), x);
  }
  // [r0 r0 r1 r1] and [r2 r2 r3 r3] as i32 pair sums, then pairwise: [r0 r1 r2 r3]
  return vpaddq_s32(vpaddlq_s16(rows01), vpaddlq_s16(rows23));
}
#endif

template <int MB>
void tile_neon(const uint8_t* packed, const uint16_t* scales, const QuantizedActivations& a, int64_t m0,
               int64_t k, float* y, int64_t n, int64_t row0) {
  const int64_t groups = k / kGroup;
  const uint8x16_t low_nibbles = vdupq_n_u8(0x0F);
  float32x4_t acc[MB][4];
  for (int i = 0; i < MB; ++i)
    for (int h = 0; h < 4; ++h) acc[i][h] = vdupq_n_f32(0.f);
  for (int64_t g = 0; g < groups; ++g) {
    const uint8_t* block = packed + g * 256;
    const uint16_t* sg = scales + g * 32;
    int8x16_t x_low[MB], x_high[MB];
    float d[MB], total[MB];
    for (int i = 0; i < MB; ++i) {
      const int64_t row = m0 + i;
      const int8_t* xq = a.xq.data() + row * k + g * kGroup;
      x_low[i] = vld1q_s8(xq);
      x_high[i] = vld1q_s8(xq + 16);
      d[i] = a.d[row * groups + g];
      total[i] = a.sum[row * groups + g];
    }
    for (int h = 0; h < 4; ++h) {
      int8x16_t w[8];
      for (int b = 0; b < 4; ++b) {
        const uint8x16_t v = vld1q_u8(block + b * 64 + h * 16);
        w[b] = vreinterpretq_s8_u8(vandq_u8(v, low_nibbles));
        w[b + 4] = vreinterpretq_s8_u8(vshrq_n_u8(v, 4));
      }
      const float32x4_t s = vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(sg + 4 * h)));
      const float32x4_t mn = vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(sg + 16 + 4 * h)));
      for (int i = 0; i < MB; ++i) {
        const int32x4_t dot = quarter_dot(w, x_low[i], x_high[i]);
        acc[i][h] = vfmaq_f32(acc[i][h], vcvtq_f32_s32(dot), vmulq_n_f32(s, d[i]));
        acc[i][h] = vfmaq_n_f32(acc[i][h], mn, total[i]);
      }
    }
  }
  const int64_t valid = std::min<int64_t>(kTile, n - row0);
  for (int i = 0; i < MB; ++i) {
    float* out = y + (m0 + i) * n + row0;
    if (valid == kTile) {
      for (int h = 0; h < 4; ++h) vst1q_f32(out + 4 * h, acc[i][h]);
    } else {
      float lanes[kTile];
      for (int h = 0; h < 4; ++h) vst1q_f32(lanes + 4 * h, acc[i][h]);
      std::memcpy(out, lanes, valid * sizeof(float));
    }
  }
}
#endif

// The same arithmetic without intrinsics (CPUs with no SIMD path above); exact integer dots, so it
// differs from the SIMD paths only in float summation order. Always compiled: the standalone test
// (tests/kernels/int4_core_test.cpp) compares every SIMD path against it.
inline void tile_portable(const uint8_t* packed, const uint16_t* scales, const QuantizedActivations& a, int64_t m0,
                          int64_t mb, int64_t k, float* y, int64_t n, int64_t row0) {
  const int64_t groups = k / kGroup;
  for (int64_t i = 0; i < mb; ++i) {
    const int64_t row = m0 + i;
    float acc[kTile] = {0.f};
    for (int64_t g = 0; g < groups; ++g) {
      const uint8_t* block = packed + g * 256;
      const int8_t* xq = a.xq.data() + row * k + g * kGroup;
      int32_t dot[kTile] = {0};
      for (int b = 0; b < 4; ++b)
        for (int lane = 0; lane < kTile; ++lane)
          for (int kk = 0; kk < 4; ++kk) {
            const uint8_t byte = block[b * 64 + lane * 4 + kk];
            dot[lane] += (byte & 0x0F) * xq[4 * b + kk] + (byte >> 4) * xq[16 + 4 * b + kk];
          }
      const float d = a.d[row * groups + g];
      const float total = a.sum[row * groups + g];
      const uint16_t* sg = scales + g * 32;
      for (int lane = 0; lane < kTile; ++lane)
        acc[lane] += static_cast<float>(dot[lane]) * (half_to_float(sg[lane]) * d) +
                     half_to_float(sg[16 + lane]) * total;
    }
    const int64_t valid = std::min<int64_t>(kTile, n - row0);
    for (int64_t lane = 0; lane < valid; ++lane) y[row * n + row0 + lane] = acc[lane];
  }
}

// The build's path for mb (1..kMBlock) activation rows from m0 and the 16-row tile at output row row0.
inline void tile(const uint8_t* packed, const uint16_t* scales, const QuantizedActivations& a, int64_t m0, int64_t mb,
                 int64_t k, float* y, int64_t n, int64_t row0) {
#if HERD_INT4_VNNI
  switch (mb) {
    case 1: return tile_vnni<1>(packed, scales, a, m0, k, y, n, row0);
    case 2: return tile_vnni<2>(packed, scales, a, m0, k, y, n, row0);
    case 3: return tile_vnni<3>(packed, scales, a, m0, k, y, n, row0);
    default: return tile_vnni<4>(packed, scales, a, m0, k, y, n, row0);
  }
#elif HERD_INT4_AVX2
  switch (mb) {
    case 1: return tile_avx2<1>(packed, scales, a, m0, k, y, n, row0);
    case 2: return tile_avx2<2>(packed, scales, a, m0, k, y, n, row0);
    case 3: return tile_avx2<3>(packed, scales, a, m0, k, y, n, row0);
    default: return tile_avx2<4>(packed, scales, a, m0, k, y, n, row0);
  }
#elif HERD_INT4_NEON
  switch (mb) {
    case 1: return tile_neon<1>(packed, scales, a, m0, k, y, n, row0);
    case 2: return tile_neon<2>(packed, scales, a, m0, k, y, n, row0);
    case 3: return tile_neon<3>(packed, scales, a, m0, k, y, n, row0);
    default: return tile_neon<4>(packed, scales, a, m0, k, y, n, row0);
  }
#else
  tile_portable(packed, scales, a, m0, mb, k, y, n, row0);
#endif
}

// Tiles [begin, end) of y [M, n]: every activation row, kMBlock rows per pass over a tile's weights.
// The torch op (int4_linear.cpp) runs this same loop, written out, per thread's share of the tiles.
// Portable=true runs the portable loop whatever the build's path (the standalone test's reference).
template <bool Portable = false>
void linear_tiles(const uint8_t* packed, const uint16_t* scales, const QuantizedActivations& a, int64_t m_rows,
                  int64_t k, float* y, int64_t n, int64_t begin, int64_t end) {
  const int64_t groups = k / kGroup;
  for (int64_t t = begin; t < end; ++t)
    for (int64_t m0 = 0; m0 < m_rows; m0 += kMBlock) {
      const int64_t mb = std::min(kMBlock, m_rows - m0);
      if constexpr (Portable)
        tile_portable(packed + t * groups * 256, scales + t * groups * 32, a, m0, mb, k, y, n, t * kTile);
      else
        tile(packed + t * groups * 256, scales + t * groups * 32, a, m0, mb, k, y, n, t * kTile);
    }
}

// The path this build runs, as cpu_kernels.int4_path() reports it.
inline std::string path() {
  return HERD_INT4_VNNI ? "avx512_vnni" : HERD_INT4_AVX2 ? "avx2" : HERD_INT4_NEON_DOTPROD ? "neon_dotprod"
                                                        : HERD_INT4_NEON ? "neon" : "portable";
}

}  // namespace
}  // namespace herd_int4
