#include "core/tensor.h"

#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <sstream>

#include "core/error.h"

namespace lamina {

std::string shape_str(const Shape& s) {
  std::ostringstream o;
  o << '[';
  for (size_t i = 0; i < s.size(); ++i) o << (i ? ", " : "") << s[i];
  o << ']';
  return o.str();
}

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (auto d : s) n *= d;
  return n;
}

Tensor Tensor::empty(DType t, Shape s) {
  Tensor r;
  r.dtype = t;
  r.shape = std::move(s);
  size_t bytes = (r.nbytes() + 63) / 64 * 64;
  // More than the machine's memory can never succeed (and the kernel would let the process grow
  // until it is killed): refuse it here with the shape.
  static const double ram = double(sysconf(_SC_PHYS_PAGES)) * double(sysconf(_SC_PAGE_SIZE));
  if (ram > 0 && double(bytes) > ram)
    fail("a tensor of shape ", shape_str(r.shape), " needs ", double(bytes) / 1e9,
         " GB, more than this machine's ", ram / 1e9, " GB of memory");
  void* p = std::aligned_alloc(64, bytes ? bytes : 64);
  if (!p)
    fail("out of memory allocating ", bytes, " bytes for a tensor of shape ", shape_str(r.shape));
  r.owner = std::shared_ptr<void>(p, std::free);
  r.data = p;
  return r;
}

Tensor Tensor::zeros(DType t, Shape s) {
  Tensor r = empty(t, std::move(s));
  std::memset(r.data, 0, r.nbytes());
  return r;
}

Tensor Tensor::view_of(void* data, DType t, Shape s, std::shared_ptr<void> owner) {
  Tensor r;
  r.dtype = t;
  r.shape = std::move(s);
  r.data = data;
  r.owner = std::move(owner);
  return r;
}

float* Tensor::f32() {
  LAMINA_CHECK(dtype == DType::F32, "expected an F32 tensor, got ", dtype_name(dtype));
  return static_cast<float*>(data);
}
const float* Tensor::f32() const {
  LAMINA_CHECK(dtype == DType::F32, "expected an F32 tensor, got ", dtype_name(dtype));
  return static_cast<const float*>(data);
}

Tensor Tensor::slice_rows(int64_t begin, int64_t end) const {
  LAMINA_CHECK(!shape.empty() && begin >= 0 && begin <= end && end <= shape[0],
               "slice_rows: rows [", begin, ", ", end, ") out of range for shape ",
               shape_str(shape));
  Shape s = shape;
  s[0] = end - begin;
  Shape one = shape;
  one[0] = 1;
  size_t row_bytes = dtype_bytes(dtype, shape_numel(one));
  return view_of(static_cast<char*>(data) + begin * row_bytes, dtype, s, owner);
}

Tensor Tensor::select0(int64_t index) const {
  Tensor t = slice_rows(index, index + 1);
  t.shape.erase(t.shape.begin());
  return t;
}

Tensor Tensor::to(DType t) const {
  Tensor r = empty(t, shape);
  if (t == dtype) {
    std::memcpy(r.data, data, nbytes());
  } else if (t == DType::F32) {
    convert_to_f32(data, dtype, r.f32(), size_t(numel()));
  } else {
    Tensor f = to(DType::F32);
    convert_from_f32(f.f32(), r.data, t, size_t(numel()));
  }
  return r;
}

}  // namespace lamina
