// int4 x int8 linear for CPU decode, as a torch op: y[M, N] = x[M, K] @ dequant(W[N, K])^T.
//
// The arithmetic, the weight layout and the per-CPU paths (AVX512-VNNI, AVX2, ARM NEON with or
// without sdot, portable) live in int4_core.h, which has no ATen in it so a test can compile it alone
// for another architecture; this file checks the tensors and spreads the 16-row tiles over threads.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include <algorithm>
#include <string>

#include "int4_core.h"

namespace {

using herd_int4::kGroup;
using herd_int4::kMBlock;
using herd_int4::kTile;

static_assert(sizeof(c10::Half) == sizeof(uint16_t), "c10::Half is the IEEE half's 16 bits");

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
  const herd_int4::QuantizedActivations a = herd_int4::quantize_activations(xf.data_ptr<float>(), m_rows, k);
  const uint8_t* pp = p.data_ptr<uint8_t>();
  const uint16_t* sp = reinterpret_cast<const uint16_t*>(sc.data_ptr<c10::Half>());
  float* yp = y.data_ptr<float>();
  const int64_t groups = k / kGroup;
  // herd_int4::linear_tiles is this loop; written out here as it was before the core moved to the
  // header, so the compiled op is instruction for instruction what it was on x86
  at::parallel_for(0, tiles, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t)
      for (int64_t m0 = 0; m0 < m_rows; m0 += kMBlock)
        herd_int4::tile(pp + t * groups * 256, sp + t * groups * 32, a, m0, std::min(kMBlock, m_rows - m0), k, yp, n,
                        t * kTile);
  });
  return y;
}

bool uses_vnni() { return HERD_INT4_VNNI; }

std::string path() { return herd_int4::path(); }

}  // namespace

TORCH_LIBRARY_FRAGMENT(herd_kernels, m) {
  m.def("int4_linear(Tensor x, Tensor packed, Tensor scales, int n) -> Tensor");
  m.def("int4_uses_vnni() -> bool", &uses_vnni);
  m.def("int4_path() -> str", &path);
}

TORCH_LIBRARY_IMPL(herd_kernels, CPU, m) { m.impl("int4_linear", &int4_linear); }
