// int4 x int8 linear for CPU decode: y[M, N] = x[M, K] @ dequant(W[N, K])^T.
//
// Why: batch-1 decode reads every weight once per token, and ATen's int4 kernel
// (_weight_int4pack_mm_for_cpu) turns every 4-bit weight into a float before the multiply, which
// keeps it compute-bound at ~10 GB/s of weights per core. This kernel does what llama.cpp's
// Q4_1 x Q8_1 does: the activations are quantized to int8 per group of 32 (one scale d per group,
// plus S = d * sum of the group's int8 values), and the 4-bit weights meet them in integer dot products
// (AVX512-VNNI vpdpbusd: 64 u8 x s8 products per instruction; on AVX2, vpmaddubsw + vpmaddwd). With w = q * s + m per group:
//     sum_k w_k x_k = s * d * sum_k q_k xq_k + m * S.
//
// Layout (herd/infer/cpu_kernels.py packs it): rows in tiles of 16, one i32 lane per row.
//   packed  uint8 [N/16, K/32, 256]: for block b in 0..3, byte (b*64 + row*4 + kk) holds, in its low
//           nibble, q[row, 32g + 4b + kk] and in its high nibble q[row, 32g + 16 + 4b + kk].
//   scales  fp16  [N/16, K/32, 2, 16]: the 16 rows' scale s, then their minimum m.
// N is padded to a multiple of 16 with zero rows; the output has exactly N columns.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>

// One path per build, picked by what the compiler targets (-march=native, or -march=haswell when
// HERD_INT4_PATH=avx2 asks for the AVX2 build on a bigger CPU): AVX512-VNNI, else AVX2 (+FMA, F16C:
// every x86 CPU since 2013), else the portable loop.
#if !defined(HERD_INT4_PORTABLE) && defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__)
#include <immintrin.h>
#define HERD_INT4_VNNI 1
#define HERD_INT4_AVX2 0
#elif !defined(HERD_INT4_PORTABLE) && defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#define HERD_INT4_VNNI 0
#define HERD_INT4_AVX2 1
#else
#define HERD_INT4_VNNI 0
#define HERD_INT4_AVX2 0
#endif

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

QuantizedActivations quantize_activations(const float* x, int64_t m_rows, int64_t k) {
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

#if HERD_INT4_VNNI
// One tile of 16 output rows for MB activation rows (MB <= kMBlock, a compile-time constant so the
// accumulators stay in registers).
template <int MB>
void tile_vnni(const uint8_t* packed, const c10::Half* scales, const QuantizedActivations& a, int64_t m0,
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
    const c10::Half* sg = scales + g * 32;
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
void tile_avx2(const uint8_t* packed, const c10::Half* scales, const QuantizedActivations& a, int64_t m0,
               int64_t k, float* y, int64_t n, int64_t row0) {
  const int64_t groups = k / kGroup;
  const __m256i low_nibbles = _mm256_set1_epi8(0x0F);
  const __m256i ones = _mm256_set1_epi16(1);
  __m256 acc[MB][2];
  for (int i = 0; i < MB; ++i) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
  for (int64_t g = 0; g < groups; ++g) {
    const uint8_t* block = packed + g * 256;
    const c10::Half* sg = scales + g * 32;
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

// The same arithmetic without intrinsics (CPUs with neither AVX512-VNNI nor AVX2); exact integer
// dots, so it differs from the SIMD paths only in float summation order.
void tile_portable(const uint8_t* packed, const c10::Half* scales, const QuantizedActivations& a, int64_t m0,
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
      const c10::Half* sg = scales + g * 32;
      for (int lane = 0; lane < kTile; ++lane)
        acc[lane] += static_cast<float>(dot[lane]) * (static_cast<float>(sg[lane]) * d) +
                     static_cast<float>(sg[16 + lane]) * total;
    }
    const int64_t valid = std::min<int64_t>(kTile, n - row0);
    for (int64_t lane = 0; lane < valid; ++lane) y[row * n + row0 + lane] = acc[lane];
  }
}

void tile(const uint8_t* packed, const c10::Half* scales, const QuantizedActivations& a, int64_t m0, int64_t mb,
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
#else
  tile_portable(packed, scales, a, m0, mb, k, y, n, row0);
#endif
}

at::Tensor int4_linear(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& scales, int64_t n) {
  TORCH_CHECK(x.dim() == 2, "int4_linear: x must be [M, K], got ", x.sizes());
  TORCH_CHECK(packed.dim() == 3 && packed.scalar_type() == at::kByte && packed.size(2) == 256,
              "int4_linear: packed must be uint8 [N/16, K/32, 256]");
  TORCH_CHECK(scales.dim() == 4 && scales.scalar_type() == at::kHalf, "int4_linear: scales must be fp16 [N/16, K/32, 2, 16]");
  const int64_t m_rows = x.size(0), k = x.size(1), tiles = packed.size(0);
  TORCH_CHECK(k == packed.size(1) * kGroup, "int4_linear: x has K=", k, " but the weight was packed for K=",
              packed.size(1) * kGroup);
  TORCH_CHECK(n > (tiles - 1) * kTile && n <= tiles * kTile, "int4_linear: n=", n, " does not match ", tiles, " tiles");
  const at::Tensor xf = x.to(at::kFloat).contiguous();
  const at::Tensor p = packed.contiguous();
  const at::Tensor sc = scales.contiguous();
  at::Tensor y = at::empty({m_rows, n}, x.options().dtype(at::kFloat));
  if (m_rows == 0) return y;
  const QuantizedActivations a = quantize_activations(xf.data_ptr<float>(), m_rows, k);
  const uint8_t* pp = p.data_ptr<uint8_t>();
  const c10::Half* sp = sc.data_ptr<c10::Half>();
  float* yp = y.data_ptr<float>();
  const int64_t groups = k / kGroup;
  at::parallel_for(0, tiles, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t)
      for (int64_t m0 = 0; m0 < m_rows; m0 += kMBlock)
        tile(pp + t * groups * 256, sp + t * groups * 32, a, m0, std::min(kMBlock, m_rows - m0), k, yp, n, t * kTile);
  });
  return y;
}

bool uses_vnni() { return HERD_INT4_VNNI; }

std::string path() { return HERD_INT4_VNNI ? "avx512_vnni" : HERD_INT4_AVX2 ? "avx2" : "portable"; }

}  // namespace

TORCH_LIBRARY_FRAGMENT(herd_kernels, m) {
  m.def("int4_linear(Tensor x, Tensor packed, Tensor scales, int n) -> Tensor");
  m.def("int4_uses_vnni() -> bool", &uses_vnni);
  m.def("int4_path() -> str", &path);
}

TORCH_LIBRARY_IMPL(herd_kernels, CPU, m) { m.impl("int4_linear", &int4_linear); }
