#include "train/packing.h"

#include <algorithm>
#include <numeric>

#include "core/error.h"

namespace lamina {

std::vector<std::vector<int64_t>> pack_first_fit_decreasing(const std::vector<int64_t>& lengths,
                                                            int64_t capacity) {
  const size_t n = lengths.size();
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return lengths[size_t(a)] > lengths[size_t(b)]; });
  size_t leaves = 1;
  while (leaves < std::max<size_t>(n, 1)) leaves *= 2;
  // tree[k] = max free space among the bins under node k; unopened bins have `capacity` free.
  std::vector<int64_t> tree(2 * leaves, capacity);
  std::vector<std::vector<int64_t>> bins;
  for (int64_t item : order) {
    const int64_t len = lengths[size_t(item)];
    if (len < 1 || len > capacity)
      fail("packing: item of length ", len, " does not fit a bin of ", capacity);
    size_t k = 1;  // descend to the leftmost leaf with enough room
    while (k < leaves) k = tree[2 * k] >= len ? 2 * k : 2 * k + 1;
    const size_t bin = k - leaves;
    if (bin >= bins.size()) bins.resize(bin + 1);
    bins[bin].push_back(item);
    tree[k] -= len;
    for (k /= 2; k >= 1; k /= 2) tree[k] = std::max(tree[2 * k], tree[2 * k + 1]);
  }
  return bins;
}

}  // namespace lamina
