// Standalone check of herd's int4 x int8 kernel core (herd/infer/kernels/int4_core.h), without torch,
// so it can be cross-compiled for aarch64 and run under qemu-aarch64 (tests/test_cpu_kernels_neon.py)
// as well as natively on x86.
//
// For several shapes (N not a multiple of the 16-row tile, M row tails of the 4-row blocks, K a
// multiple of 32) it packs random 4-bit weights in the layout herd/infer/cpu_kernels.py's pack()
// writes, runs the build's path (AVX512-VNNI, AVX2, NEON with or without sdot, or portable: whatever
// the compiler targets) and the portable loop, and checks both against the kernel's arithmetic in
// double precision (max |error| / max |y| < 1e-5) and against each other (< 1e-4). Worst-case inputs
// (all weights 15, activations at +-127) are included, where an int16 intermediate could overflow.
//
// Usage: int4_core_test [expected-path]; prints one line per shape, exits 0 only if every check
// passes and the build's path is expected-path (when given), so a build that silently fell back to the
// portable loop cannot pass for a NEON one.
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "../../herd/infer/kernels/int4_core.h"

namespace {

using herd_int4::kGroup;
using herd_int4::kTile;

struct Weights {
  int64_t n, k;
  std::vector<uint8_t> q;       // [n, k], 0..15
  std::vector<uint16_t> scale;  // [n, k/32] half bits
  std::vector<uint16_t> low;    // [n, k/32] half bits (the group's minimum)
};

// A random half in about +-[2^-14, 2) with some subnormals: the bits are drawn directly, so the
// value is exactly representable and needs no float -> half rounding here.
uint16_t random_half(std::mt19937& gen, bool positive) {
  std::uniform_int_distribution<int> exponent(0, 15), mantissa(0, 1023), coin(0, 1);
  const int e = exponent(gen) == 0 ? 0 : 1 + exponent(gen) % 15;  // 1 in 16 is subnormal (e = 0)
  const int sign = positive ? 0 : coin(gen);
  return static_cast<uint16_t>((sign << 15) | (e << 10) | mantissa(gen));
}

Weights random_weights(std::mt19937& gen, int64_t n, int64_t k, bool worst) {
  Weights w{n, k, std::vector<uint8_t>(n * k), std::vector<uint16_t>(n * k / kGroup), std::vector<uint16_t>(n * k / kGroup)};
  std::uniform_int_distribution<int> nibble(0, 15);
  for (auto& v : w.q) v = worst ? 15 : static_cast<uint8_t>(nibble(gen));
  for (size_t i = 0; i < w.scale.size(); ++i) {
    w.scale[i] = random_half(gen, true);
    w.low[i] = random_half(gen, false);
  }
  return w;
}

// cpu_kernels.pack(): q[t*16 + j, 32g + 16h + 4b + kk] -> packed[t, g, b*64 + j*4 + kk], nibble h
// (h=0 low); scales[t, g, 0, j] = scale, [t, g, 1, j] = minimum; rows past n are zero.
void pack(const Weights& w, std::vector<uint8_t>& packed, std::vector<uint16_t>& scales) {
  const int64_t tiles = (w.n + kTile - 1) / kTile, groups = w.k / kGroup;
  packed.assign(tiles * groups * 256, 0);
  scales.assign(tiles * groups * 32, 0);
  for (int64_t row = 0; row < w.n; ++row) {
    const int64_t t = row / kTile, j = row % kTile;
    for (int64_t g = 0; g < groups; ++g) {
      for (int h = 0; h < 2; ++h)
        for (int b = 0; b < 4; ++b)
          for (int kk = 0; kk < 4; ++kk) {
            const uint8_t code = w.q[row * w.k + g * kGroup + 16 * h + 4 * b + kk];
            packed[(t * groups + g) * 256 + b * 64 + j * 4 + kk] |= static_cast<uint8_t>(code << (4 * h));
          }
      scales[(t * groups + g) * 32 + j] = w.scale[row * groups + g];
      scales[(t * groups + g) * 32 + 16 + j] = w.low[row * groups + g];
    }
  }
}

// The kernel's arithmetic in double: sum_k (q * s + m) * (xq * d) over the kernel's own int8
// activations, so the only difference left is float rounding.
std::vector<double> reference(const Weights& w, const herd_int4::QuantizedActivations& a, int64_t m_rows) {
  const int64_t groups = w.k / kGroup;
  std::vector<double> y(m_rows * w.n, 0.0);
  for (int64_t i = 0; i < m_rows; ++i)
    for (int64_t row = 0; row < w.n; ++row) {
      double total = 0.0;
      for (int64_t g = 0; g < groups; ++g) {
        const double s = herd_int4::half_to_float(w.scale[row * groups + g]);
        const double m = herd_int4::half_to_float(w.low[row * groups + g]);
        const double d = a.d[i * groups + g];
        for (int64_t kk = 0; kk < kGroup; ++kk)
          total += (w.q[row * w.k + g * kGroup + kk] * s + m) * (a.xq[i * w.k + g * kGroup + kk] * d);
      }
      y[i * w.n + row] = total;
    }
  return y;
}

double relative_error(const std::vector<float>& got, const std::vector<double>& want) {
  double worst = 0.0, scale = 0.0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    worst = std::max(worst, std::fabs(got[i] - want[i]));
    scale = std::max(scale, std::fabs(want[i]));
  }
  return scale > 0.0 ? worst / scale : worst;
}

bool half_conversion_is_exact() {
  const struct { uint16_t bits; float value; } cases[] = {
      {0x3C00, 1.0f}, {0xC000, -2.0f}, {0x7BFF, 65504.0f}, {0x0001, 0x1.0p-24f}, {0x03FF, 1023 * 0x1.0p-24f},
      {0x0400, 0x1.0p-14f}, {0x3555, 0x1.554p-2f}, {0x8000, -0.0f}, {0x0000, 0.0f}};
  bool ok = true;
  for (const auto& c : cases)
    if (herd_int4::half_to_float(c.bits) != c.value || std::signbit(herd_int4::half_to_float(c.bits)) != std::signbit(c.value)) {
      std::printf("half_to_float(0x%04x) = %a, want %a\n", c.bits, herd_int4::half_to_float(c.bits), c.value);
      ok = false;
    }
  return ok;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string path = herd_int4::path();
  std::printf("path %s\n", path.c_str());
  bool ok = half_conversion_is_exact();
  if (argc > 1 && path != argv[1]) {
    std::printf("FAIL: built path %s, expected %s\n", path.c_str(), argv[1]);
    ok = false;
  }
  struct Shape { int64_t m, n, k; bool worst; };
  const Shape shapes[] = {{1, 960, 576, false}, {3, 50, 64, false}, {7, 576, 1536, false}, {5, 16, 32, false},
                          {4, 33, 96, false},   {6, 200, 320, false}, {9, 17, 256, true},   {2, 64, 64, true}};
  std::mt19937 gen(1234);
  for (const Shape& shape : shapes) {
    const Weights w = random_weights(gen, shape.n, shape.k, shape.worst);
    std::vector<float> x(shape.m * shape.k);
    std::normal_distribution<float> normal(0.f, 1.f);
    for (int64_t i = 0; i < static_cast<int64_t>(x.size()); ++i)
      x[i] = shape.worst ? ((i / kGroup) % 2 ? -3.f : 3.f) : normal(gen);  // worst: every xq = +-127
    if (!shape.worst && shape.m > 1) std::fill(x.begin(), x.begin() + kGroup, 0.f);  // a group with d = 0
    std::vector<uint8_t> packed;
    std::vector<uint16_t> scales;
    pack(w, packed, scales);
    const int64_t tiles = (shape.n + kTile - 1) / kTile;
    const herd_int4::QuantizedActivations a = herd_int4::quantize_activations(x.data(), shape.m, shape.k);
    std::vector<float> fast(shape.m * shape.n, NAN), portable(shape.m * shape.n, NAN);
    herd_int4::linear_tiles<false>(packed.data(), scales.data(), a, shape.m, shape.k, fast.data(), shape.n, 0, tiles);
    herd_int4::linear_tiles<true>(packed.data(), scales.data(), a, shape.m, shape.k, portable.data(), shape.n, 0, tiles);
    const std::vector<double> want = reference(w, a, shape.m);
    const std::vector<double> portable_d(portable.begin(), portable.end());
    const double fast_err = relative_error(fast, want), portable_err = relative_error(portable, want);
    const double agree = relative_error(fast, portable_d);
    const bool pass = fast_err < 1e-5 && portable_err < 1e-5 && agree < 1e-4;
    std::printf("%s M=%" PRId64 " N=%" PRId64 " K=%" PRId64 "%s: %s vs float64 %.2e, portable vs float64 %.2e, %s vs portable %.2e\n",
                pass ? "ok  " : "FAIL", shape.m, shape.n, shape.k, shape.worst ? " (worst case)" : "", path.c_str(),
                fast_err, portable_err, path.c_str(), agree);
    ok = ok && pass;
  }
  std::printf("%s\n", ok ? "PASS" : "FAIL");
  return ok ? 0 : 1;
}
