// Decode attention over a paged KV cache, one query per sequence, with explicit SIMD: the arithmetic
// without ATen (paged_decode_attention.cpp wraps it as a torch op; tests/kernels/attention_core_test.cpp
// compiles it alone, so the NEON path runs under qemu-aarch64 on an x86 machine).
//
// Why explicit SIMD: the first version relied on the compiler auto-vectorizing a 16-partial-sum dot
// product and converted every bfloat16/float16 cache row to float32 in a scalar loop first, and its
// softmax called std::exp once per score (at 16 sequences x 540 tokens x 9 heads that is 78K scalar
// exps per layer), and it kept a [heads, length] score matrix that outgrows L2 at 32 heads x 4K tokens.
// Here every ISA gets the same vector pieces: a dot product that converts K in registers as it loads
// it, a multiply-add of V rows into the output (same), and a vector exp, in one sweep over the context
// with an online softmax (blocks of 64 tokens: keys, then the block's softmax update, then values). One
// algorithm is written once over an `Isa` type (the vector width, loads, FMA, reduce, exp), so the
// portable path is the same algorithm with a width of 1.
//
// Paths, picked by what the compiler targets (the library's build flags, see cpu_kernels.py):
// AVX-512F (16 lanes), AVX2 + FMA + F16C (8), AArch64 NEON (4), else portable. HERD_INT4_PORTABLE
// (HERD_INT4_PATH=portable) forces the portable path here too.
//
// Layout: keys/values [slots, Hkv, hd] (one slot = every KV head's row, contiguous); `slots` [L] is the
// sequence's cache slot of its j-th context token; `mask` [L] (false = padding) may be null. At most
// 256 query heads (the op checks).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>

#include "half.h"

#if !defined(HERD_INT4_PORTABLE) && defined(__AVX512F__)
#include <immintrin.h>
#define HERD_ATTENTION_PATH_AVX512 1
#elif !defined(HERD_INT4_PORTABLE) && defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#define HERD_ATTENTION_PATH_AVX2 1
#elif !defined(HERD_INT4_PORTABLE) && defined(__ARM_NEON) && defined(__aarch64__)
#include <arm_neon.h>
#define HERD_ATTENTION_PATH_NEON 1
#endif

namespace herd_attention {
namespace {

// Cache element types by their bits (the torch op reinterprets c10::BFloat16 / c10::Half as these).
struct bf16_bits { uint16_t bits; };
struct f16_bits { uint16_t bits; };

// exp(x) for x <= 0 (scores minus their maximum), as Cephes' expf: x = n ln2 + r, |r| <= ln2/2,
// exp(r) by a degree-6 polynomial, times 2^n. Relative error ~2e-7; inputs below -87.3 give exactly 0
// (the masked scores are -inf).
constexpr float kLog2e = 1.44269504088896341f, kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;
constexpr float kExpC[6] = {1.9875691500e-4f, 1.3981999507e-3f, 8.3334519073e-3f, 4.1665795894e-2f,
                            1.6666665459e-1f, 5.0000001201e-1f};
constexpr float kExpMin = -87.3f;

// Width 1: plain C++, also the reference the SIMD paths are tested against.
struct Portable {
  using vec = float;
  static constexpr int W = 1;
  static const char* name() { return "portable"; }
  static vec zero() { return 0.f; }
  static vec set1(float x) { return x; }
  static vec load(const float* p) { return *p; }
  static vec load(const bf16_bits* p) { return herd_kernels_common::bf16_to_float(p->bits); }
  static vec load(const f16_bits* p) { return herd_kernels_common::half_to_float(p->bits); }
  static void store(float* p, vec v) { *p = v; }
  static vec fma(vec a, vec b, vec c) { return std::fma(a, b, c); }
  static vec add(vec a, vec b) { return a + b; }
  static vec mul(vec a, vec b) { return a * b; }
  static vec max(vec a, vec b) { return std::max(a, b); }
  static float reduce_add(vec v) { return v; }
  static float reduce_max(vec v) { return v; }
  static vec exp(vec x) {
    if (!(x >= kExpMin)) return 0.f;
    const float n = std::nearbyint(x * kLog2e);
    const float r = std::fma(n, -kLn2Lo, std::fma(n, -kLn2Hi, x));
    float p = kExpC[0];
    for (int i = 1; i < 6; ++i) p = std::fma(p, r, kExpC[i]);
    p = std::fma(p, r * r, r + 1.f);
    return std::ldexp(p, static_cast<int>(n));
  }
};

#if defined(HERD_ATTENTION_PATH_AVX512)
struct Avx512 {
  using vec = __m512;
  static constexpr int W = 16;
  static const char* name() { return "avx512"; }
  static vec zero() { return _mm512_setzero_ps(); }
  static vec set1(float x) { return _mm512_set1_ps(x); }
  static vec load(const float* p) { return _mm512_loadu_ps(p); }
  static vec load(const bf16_bits* p) {
    const __m512i wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    return _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
  }
  static vec load(const f16_bits* p) { return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))); }
  static void store(float* p, vec v) { _mm512_storeu_ps(p, v); }
  static vec fma(vec a, vec b, vec c) { return _mm512_fmadd_ps(a, b, c); }
  static vec add(vec a, vec b) { return _mm512_add_ps(a, b); }
  static vec mul(vec a, vec b) { return _mm512_mul_ps(a, b); }
  static vec max(vec a, vec b) { return _mm512_max_ps(a, b); }
  static float reduce_add(vec v) { return _mm512_reduce_add_ps(v); }
  static float reduce_max(vec v) { return _mm512_reduce_max_ps(v); }
  static vec exp(vec x) {
    const __mmask16 live = _mm512_cmp_ps_mask(x, _mm512_set1_ps(kExpMin), _CMP_GE_OQ);
    x = _mm512_max_ps(x, _mm512_set1_ps(kExpMin));
    const vec n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(kLog2e)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const vec r = _mm512_fnmadd_ps(n, _mm512_set1_ps(kLn2Lo), _mm512_fnmadd_ps(n, _mm512_set1_ps(kLn2Hi), x));
    vec p = _mm512_set1_ps(kExpC[0]);
    for (int i = 1; i < 6; ++i) p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kExpC[i]));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.f)));
    return _mm512_maskz_mov_ps(live, _mm512_scalef_ps(p, n));
  }
};
using Native = Avx512;
#elif defined(HERD_ATTENTION_PATH_AVX2)
struct Avx2 {
  using vec = __m256;
  static constexpr int W = 8;
  static const char* name() { return "avx2"; }
  static vec zero() { return _mm256_setzero_ps(); }
  static vec set1(float x) { return _mm256_set1_ps(x); }
  static vec load(const float* p) { return _mm256_loadu_ps(p); }
  static vec load(const bf16_bits* p) {
    const __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
  }
  static vec load(const f16_bits* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
  static void store(float* p, vec v) { _mm256_storeu_ps(p, v); }
  static vec fma(vec a, vec b, vec c) { return _mm256_fmadd_ps(a, b, c); }
  static vec add(vec a, vec b) { return _mm256_add_ps(a, b); }
  static vec mul(vec a, vec b) { return _mm256_mul_ps(a, b); }
  static vec max(vec a, vec b) { return _mm256_max_ps(a, b); }
  static float reduce_add(vec v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
  static float reduce_max(vec v) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
  static vec exp(vec x) {
    const vec live = _mm256_cmp_ps(x, _mm256_set1_ps(kExpMin), _CMP_GE_OQ);
    x = _mm256_max_ps(x, _mm256_set1_ps(kExpMin));
    const vec n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(kLog2e)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const vec r = _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2Lo), _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2Hi), x));
    vec p = _mm256_set1_ps(kExpC[0]);
    for (int i = 1; i < 6; ++i) p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kExpC[i]));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.f)));
    // 2^n: n (>= -126 here) into the exponent bits
    const __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_and_ps(live, _mm256_mul_ps(p, _mm256_castsi256_ps(bits)));
  }
};
using Native = Avx2;
#elif defined(HERD_ATTENTION_PATH_NEON)
struct Neon {
  using vec = float32x4_t;
  static constexpr int W = 4;
  static const char* name() { return "neon"; }
  static vec zero() { return vdupq_n_f32(0.f); }
  static vec set1(float x) { return vdupq_n_f32(x); }
  static vec load(const float* p) { return vld1q_f32(p); }
  static vec load(const bf16_bits* p) {
    return vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(reinterpret_cast<const uint16_t*>(p)), 16));
  }
  static vec load(const f16_bits* p) {
    return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(reinterpret_cast<const uint16_t*>(p))));
  }
  static void store(float* p, vec v) { vst1q_f32(p, v); }
  static vec fma(vec a, vec b, vec c) { return vfmaq_f32(c, a, b); }
  static vec add(vec a, vec b) { return vaddq_f32(a, b); }
  static vec mul(vec a, vec b) { return vmulq_f32(a, b); }
  static vec max(vec a, vec b) { return vmaxq_f32(a, b); }
  static float reduce_add(vec v) { return vaddvq_f32(v); }
  static float reduce_max(vec v) { return vmaxvq_f32(v); }
  static vec exp(vec x) {
    const uint32x4_t live = vcgeq_f32(x, vdupq_n_f32(kExpMin));
    x = vmaxq_f32(x, vdupq_n_f32(kExpMin));
    const int32x4_t ni = vcvtnq_s32_f32(vmulq_n_f32(x, kLog2e));
    const vec n = vcvtq_f32_s32(ni);
    const vec r = vfmsq_f32(vfmsq_f32(x, n, vdupq_n_f32(kLn2Hi)), n, vdupq_n_f32(kLn2Lo));
    vec p = vdupq_n_f32(kExpC[0]);
    for (int i = 1; i < 6; ++i) p = vfmaq_f32(vdupq_n_f32(kExpC[i]), p, r);
    p = vfmaq_f32(vaddq_f32(r, vdupq_n_f32(1.f)), p, vmulq_f32(r, r));
    const int32x4_t bits = vshlq_n_s32(vaddq_s32(ni, vdupq_n_s32(127)), 23);
    return vreinterpretq_f32_u32(vandq_u32(live, vreinterpretq_u32_f32(vmulq_f32(p, vreinterpretq_f32_s32(bits)))));
  }
};
using Native = Neon;
#else
using Native = Portable;
#endif

// q . k over hd elements: full vectors, then the tail at width 1.
template <class Isa, typename E>
inline float dot(const float* q, const E* k, int64_t hd) {
  typename Isa::vec acc0 = Isa::zero(), acc1 = Isa::zero();
  int64_t i = 0;
  for (; i + 2 * Isa::W <= hd; i += 2 * Isa::W) {
    acc0 = Isa::fma(Isa::load(q + i), Isa::load(k + i), acc0);
    acc1 = Isa::fma(Isa::load(q + i + Isa::W), Isa::load(k + i + Isa::W), acc1);
  }
  for (; i + Isa::W <= hd; i += Isa::W) acc0 = Isa::fma(Isa::load(q + i), Isa::load(k + i), acc0);
  float total = Isa::reduce_add(Isa::add(acc0, acc1));
  for (; i < hd; ++i) total = std::fma(q[i], Portable::load(k + i), total);
  return total;
}

// acc[0:hd] += p * v[0:hd]
template <class Isa, typename E>
inline void add_scaled(float* acc, float p, const E* v, int64_t hd) {
  const typename Isa::vec pv = Isa::set1(p);
  int64_t i = 0;
  for (; i + Isa::W <= hd; i += Isa::W) Isa::store(acc + i, Isa::fma(pv, Isa::load(v + i), Isa::load(acc + i)));
  for (; i < hd; ++i) acc[i] = std::fma(p, Portable::load(v + i), acc[i]);
}

// Context tokens per block of the one-pass (online) softmax: a block's scores for every head stay in
// L1 (32 heads x 64 floats = 8 KB) between the key and the value sweep.
constexpr int64_t kBlock = 64;

// max over s[0:n]
template <class Isa>
inline float block_max(const float* s, int64_t n) {
  typename Isa::vec top_v = Isa::set1(-std::numeric_limits<float>::infinity());
  int64_t i = 0;
  for (; i + Isa::W <= n; i += Isa::W) top_v = Isa::max(top_v, Isa::load(s + i));
  float top = Isa::reduce_max(top_v);
  for (; i < n; ++i) top = std::max(top, s[i]);
  return top;
}

// s[0:n] = exp(s[0:n] - top) in place; returns their sum (masked scores, -inf, become 0)
template <class Isa>
inline float exp_shifted(float* s, int64_t n, float top) {
  const typename Isa::vec shift = Isa::set1(-top);
  typename Isa::vec sum_v = Isa::zero();
  int64_t i = 0;
  for (; i + Isa::W <= n; i += Isa::W) {
    const typename Isa::vec e = Isa::exp(Isa::add(Isa::load(s + i), shift));
    Isa::store(s + i, e);
    sum_v = Isa::add(sum_v, e);
  }
  float total = Isa::reduce_add(sum_v);
  for (; i < n; ++i) total += (s[i] = Portable::exp(s[i] - top));
  return total;
}

// x[0:n] *= c
template <class Isa>
inline void scale_row(float* x, int64_t n, float c) {
  const typename Isa::vec cv = Isa::set1(c);
  int64_t i = 0;
  for (; i + Isa::W <= n; i += Isa::W) Isa::store(x + i, Isa::mul(Isa::load(x + i), cv));
  for (; i < n; ++i) x[i] *= c;
}

// One sequence, KV heads [kv0, kv1) and the query heads that share them (GQA groups), in one sweep
// over the context: each block of kBlock tokens gets its scores (keys), then an online-softmax update
// (running maximum and sum per head, the output rescaled when the maximum grows), then its values, so
// every cache row is read once and no [heads, length] score matrix leaves the cache.
//   query   [H, hd] float, already multiplied by the softmax scale
//   keys / values   the whole cache [slots, Hkv, hd]
//   scores  scratch [H, kBlock] floats;  out [H, hd] float (only the heads of [kv0, kv1) are written)
template <class Isa, typename E>
void attend(const float* query, const E* keys, const E* values, const int64_t* slots, const bool* mask,
            int64_t heads, int64_t kv_heads, int64_t hd, int64_t length, int64_t kv0, int64_t kv1, float* scores,
            float* out) {
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  const int64_t group = heads / kv_heads, row = kv_heads * hd;
  const int64_t h0 = kv0 * group, h1 = kv1 * group;
  float running_max[256], running_sum[256];  // per head of the task (heads <= 256, checked by the op)
  std::fill(running_max, running_max + (h1 - h0), kNegInf);
  std::fill(running_sum, running_sum + (h1 - h0), 0.f);
  std::fill(out + h0 * hd, out + h1 * hd, 0.f);
  for (int64_t j0 = 0; j0 < length; j0 += kBlock) {
    const int64_t n = std::min(kBlock, length - j0);
    for (int64_t jj = 0; jj < n; ++jj) {
      const int64_t j = j0 + jj;
      if (mask && !mask[j]) {
        for (int64_t h = h0; h < h1; ++h) scores[h * kBlock + jj] = kNegInf;
        continue;
      }
      const E* key = keys + slots[j] * row;
      for (int64_t h = h0; h < h1; ++h) scores[h * kBlock + jj] = dot<Isa>(query + h * hd, key + (h / group) * hd, hd);
    }
    for (int64_t h = h0; h < h1; ++h) {
      float* s = scores + h * kBlock;
      const float top = std::max(running_max[h - h0], block_max<Isa>(s, n));
      if (std::isinf(top)) {  // nothing unmasked yet: weights 0
        std::fill(s, s + n, 0.f);
        continue;
      }
      const float correction = std::isinf(running_max[h - h0]) ? 0.f : Portable::exp(running_max[h - h0] - top);
      if (correction != 1.f) scale_row<Isa>(out + h * hd, hd, correction);
      running_sum[h - h0] = running_sum[h - h0] * correction + exp_shifted<Isa>(s, n, top);
      running_max[h - h0] = top;
    }
    for (int64_t jj = 0; jj < n; ++jj) {
      const int64_t j = j0 + jj;
      if (mask && !mask[j]) continue;
      const E* value = values + slots[j] * row;
      for (int64_t h = h0; h < h1; ++h) add_scaled<Isa>(out + h * hd, scores[h * kBlock + jj], value + (h / group) * hd, hd);
    }
  }
  for (int64_t h = h0; h < h1; ++h)
    scale_row<Isa>(out + h * hd, hd, running_sum[h - h0] > 0.f ? 1.f / running_sum[h - h0] : 0.f);
}

// The path this build runs ("avx512", "avx2", "neon", "portable"), as cpu_kernels.attention_path() reports.
inline std::string path() { return Native::name(); }

}  // namespace
}  // namespace herd_attention
