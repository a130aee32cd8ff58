// First-fit-decreasing bin packing (OpenChat's multipack): items sorted by length, longest first,
// each placed into the first bin (in creation order) with room for it. A max-tree over the bins'
// free space finds that bin in O(log n).
#pragma once
#include <cstdint>
#include <vector>

namespace lamina {

// Bins of item indices; every length must be in [1, capacity].
std::vector<std::vector<int64_t>> pack_first_fit_decreasing(const std::vector<int64_t>& lengths,
                                                            int64_t capacity);

}  // namespace lamina
