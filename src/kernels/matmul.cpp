#include "kernels/matmul.h"

#include <omp.h>

#include <dnnl.hpp>
#include <map>
#include <mutex>
#include <tuple>
#include <vector>

#include "core/error.h"
#include "kernels/ops.h"

namespace lamina {
namespace {

struct Dnnl {
  dnnl::engine eng{dnnl::engine::kind::cpu, 0};
  dnnl::stream strm{eng};
  std::mutex mu;
  // (M, K, N, weight dtype, accumulate) -> primitive. Decode (M = 1) and prompt shapes repeat,
  // so creation cost is paid once per shape.
  std::map<std::tuple<int64_t, int64_t, int64_t, int, bool>, dnnl::matmul> cache;
};

Dnnl& dnnl_state() {
  static Dnnl d;
  return d;
}

dnnl::memory::data_type dt_of(DType t) {
  return t == DType::BF16 ? dnnl::memory::data_type::bf16 : dnnl::memory::data_type::f32;
}

}  // namespace

void linear(const float* x, int64_t M, const Tensor& w, float* y, bool accumulate) {
  LAMINA_CHECK(w.shape.size() == 2, "linear: weight must be 2-D, got ", shape_str(w.shape));
  LAMINA_CHECK(w.dtype == DType::F32 || w.dtype == DType::BF16, "linear: weight dtype ",
               dtype_name(w.dtype), " not supported");
  const int64_t N = w.shape[0], K = w.shape[1];
  if (M == 0) return;
  auto& d = dnnl_state();
  using md = dnnl::memory::desc;
  const auto wt = dt_of(w.dtype);
  // Weight as the [K, N] matrix W^T: strides (1, K) over the row-major [N, K] storage.
  md src_md({M, K}, wt, {K, 1}), wei_md({K, N}, wt, {1, K});
  md dst_md({M, N}, dnnl::memory::data_type::f32, {N, 1});
  dnnl::matmul prim;
  {
    std::lock_guard<std::mutex> lock(d.mu);
    auto key = std::make_tuple(M, K, N, int(w.dtype), accumulate);
    auto it = d.cache.find(key);
    if (it == d.cache.end()) {
      dnnl::primitive_attr attr;
      if (accumulate) {
        dnnl::post_ops po;
        po.append_sum(1.0f);
        attr.set_post_ops(po);
      }
      dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(src_md, wei_md, dst_md), attr, d.eng);
      it = d.cache.emplace(key, dnnl::matmul(pd)).first;
    }
    prim = it->second;
  }
  thread_local std::vector<uint16_t> xb;
  void* src = const_cast<float*>(x);
  if (w.dtype == DType::BF16) {
    xb.resize(size_t(M * K));
    to_bf16_parallel(x, xb.data(), M * K);
    src = xb.data();
  }
  dnnl::memory s(src_md, d.eng, src), wm(wei_md, d.eng, w.data), dm(dst_md, d.eng, y);
  prim.execute(d.strm, {{DNNL_ARG_SRC, s}, {DNNL_ARG_WEIGHTS, wm}, {DNNL_ARG_DST, dm}});
  d.strm.wait();
}

void set_num_threads(int n) {
  if (n > 0) omp_set_num_threads(n);
}
int num_threads() { return omp_get_max_threads(); }

}  // namespace lamina
