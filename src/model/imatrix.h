// llama.cpp's importance matrix computed with lamina's forward (what llama-imatrix does): the
// calibration tokens in chunks of n_ctx, each chunk a fresh sequence starting with BOS (when the
// tokenizer adds one), every product's input rows summed as x^2 per column under the product's
// GGUF name (blk.N.attn_q.weight, ..., Mixtral's experts under blk.N.ffn_*_exps.weight, one matrix
// per expert, counting the tokens routed to it; the router blk.N.ffn_gate_inp.weight), the LM
// head (output.weight) only when asked and not tied. Also the perplexity llama-imatrix prints: over
// the second half of every chunk.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "io/imatrix_file.h"
#include "model/model.h"

namespace lamina {

struct ImatrixOptions {
  int64_t n_ctx = 512;          // tokens per chunk
  int64_t max_chunks = -1;      // -1: every whole chunk of the data
  bool process_output = false;  // include the LM head (output.weight)
  bool perplexity = true;
  int32_t bos_id = -1;  // replaces each chunk's first token (-1: no BOS)
  std::string dataset;  // recorded in imatrix.datasets
  // After each chunk: chunks done, of total, and the perplexity so far (0 without it).
  std::function<void(int64_t done, int64_t total, double ppl)> on_chunk;
};

struct ImatrixResult {
  ImatrixData data;
  int64_t chunks = 0;
  double perplexity = 0, perplexity_error = 0;  // exp(mean nll) and its standard error
};

// tokens: the whole calibration text, tokenized (with BOS first when the model adds one); Error
// when it holds fewer than 2 * n_ctx tokens (llama-imatrix's minimum).
ImatrixResult compute_imatrix(Model& model, const std::vector<int32_t>& tokens,
                              const ImatrixOptions& opt);

}  // namespace lamina
