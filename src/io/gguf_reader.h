// GGUF (v2/v3) reading: header, metadata and tensor infos of a memory-mapped file, every length,
// count, type and offset checked against the file before use, so a truncated or corrupt file is a
// one-line error naming the file, never a crash (fuzzed with the safetensors parser's harness
// pattern in mind). Tensor data stays in the map.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "io/mapped_file.h"
#include "quant/ggml_blocks.h"

namespace lamina {

struct GgufTensorInfo {
  std::string name;
  std::vector<int64_t> ne;  // ne[0] contiguous
  uint32_t type = 0;        // ggml type id (GgmlType when one lamina knows)
  uint64_t offset = 0;      // from the data section
  uint64_t bytes = 0;       // 0 for a type lamina does not know
};

struct GgufFile {
  uint32_t version = 0;
  // Metadata as JSON values (arrays longer than 64 elements keep their first 64 and a count).
  nlohmann::json metadata = nlohmann::json::object();
  std::map<std::string, uint64_t> array_lengths;  // full length of every array value
  std::vector<std::string> tokens;  // tokenizer.ggml.tokens in full (the vocabulary's pieces)
  std::vector<GgufTensorInfo> tensors;
  uint64_t data_offset = 0, alignment = 32;
};

// Parses a whole file image; `where` starts every error message.
GgufFile parse_gguf(const uint8_t* data, size_t size, const std::string& where);
GgufFile read_gguf(const std::string& path);
const char* ggml_type_name_or_id(uint32_t type, std::string& buf);

}  // namespace lamina
