// llama.cpp's importance matrix ("imatrix") files: per matrix of a model, the sum over the
// calibration tokens of each input column's squared activation, and how many rows were summed.
// Two formats, as llama-imatrix writes them and llama-quantize reads them:
//   GGUF (the default): general.type = "imatrix", imatrix.datasets [string], imatrix.chunk_count
//     and imatrix.chunk_size (u32); per matrix NAME two F32 tensors, NAME.in_sum2 with
//     ne = {cols, nmat} (the sums) and NAME.counts with ne = {1, nmat} (rows summed), nmat being
//     the number of experts of a stacked MoE tensor (1 otherwise).
//   legacy ".dat": i32 entry count; per entry i32 name length, the name, i32 ncall, i32 nval and
//     nval F32 values = sum / count * ncall (ncall: chunks, rounded up); then i32 chunk count, i32
//     dataset-name length and the name.
// Both hold names in GGUF's spelling ("blk.0.attn_q.weight").
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace lamina {

struct ImatrixEntry {
  int64_t cols = 0;            // input columns of the matrix (ne0)
  std::vector<double> sum2;    // [nmat * cols]: sum of x^2 per column, matrix by matrix
  std::vector<int64_t> count;  // [nmat]: rows (tokens, or tokens routed to the expert) summed
};

struct ImatrixData {
  std::vector<std::string> datasets;  // the calibration files it was computed on
  int64_t chunk_count = 0;            // chunks of chunk_size tokens evaluated
  int64_t chunk_size = 0;
  std::map<std::string, ImatrixEntry> entries;  // by GGUF tensor name
};

// Importance rows by GGUF tensor name, as llama-quantize hands them to the quantizers: the mean of
// x^2 per column (sum2 / count; 1 where a matrix, an expert never routed to, saw no rows), one row
// of cols values per matrix, experts' rows concatenated.
using ImportanceMatrix = std::map<std::string, std::vector<float>>;
ImportanceMatrix importance_rows(const ImatrixData& d);

// Writes PATH (temporary file, renamed when complete). legacy: the .dat format.
void write_imatrix(const std::string& path, const ImatrixData& d, bool legacy);
// Reads either format (GGUF by its magic); every size checked, non-finite values rejected, errors
// naming the file and the entry. A legacy file's counts are its ncall (its values are
// already sum / count * ncall, so importance_rows gives llama-quantize's values for both).
ImatrixData read_imatrix(const std::string& path);
// The same on a file's bytes; `where` starts every error message (fuzz/gguf_fuzz.cpp).
ImatrixData parse_imatrix(const uint8_t* data, size_t size, const std::string& where);

}  // namespace lamina
