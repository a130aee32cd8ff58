// A GGUF file in llama.cpp's conventions (lamina export-gguf, convert_hf_to_gguf.py) as a Model:
// the config from its metadata, tensors mapped back to transformers' names, Q/K rows un-permuted
// (ggml's adjacent-pair RoPE -> transformers' rotate-half), Mixtral's stacked experts split per
// expert. F32/BF16/Q8_0/Q4_0 tensors stay zero-copy views of the file's map; F16 becomes F32.
// The vocabulary is not rebuilt: callers pair the file with a tokenizer directory.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "io/mapped_file.h"
#include "model/model.h"

namespace lamina {

// The file's config and its tensors under transformers' names (Split MoE layout), every one
// checked against the shapes the metadata implies; views keep the file's map alive. vocab: the
// pieces of tokenizer.ggml.tokens (empty when the file has none), to check a paired tokenizer.
struct GgufCheckpoint {
  ModelConfig cfg;
  std::map<std::string, Tensor> tensors;
  std::vector<std::string> vocab;
  std::shared_ptr<MappedFile> map;  // the file: tensors inside it are views, others copies
  bool is_view(const Tensor& t) const;
};
GgufCheckpoint read_gguf_checkpoint(const std::string& path);

std::unique_ptr<Model> load_gguf_model(const std::string& path, const LoadOptions& opt = {});
// True for a GGUF file, false for anything that is not a regular file (a model directory); fails
// for a regular file without GGUF's magic.
bool is_gguf_file(const std::string& path);

}  // namespace lamina
