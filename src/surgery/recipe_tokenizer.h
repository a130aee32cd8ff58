// The tokenizer side of a mergekit passthrough recipe (mergekit 0.1.5): which tokenizer the
// output gets (base_model's, tokenizer_source's), how embed_tokens / lm_head rows follow it, and
// the chat_template written.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "surgery/recipe.h"

namespace lamina {

// The models a recipe names (base_model, every slice's), in recipe order, each once.
std::vector<std::string> referenced_models(const Recipe& r);

// What tokenizer_source makes of the vocabulary (mergekit 0.1.5 build_tokenizer and
// PermutedVocabulary): the output tokenizer is the source's ("base": the donor's, stripped of ids
// >= its vocab_size), vocab_size becomes its size, and embed_tokens / lm_head [V, H] are rebuilt
// row by row in its order: the row of the same token in that tensor's model, zeros where the
// model lacks the token (with one model per passthrough tensor, mergekit's fallback is its
// ZeroEmbedding).
struct VocabPlan {
  std::string dir;    // the tokenizer files written
  int64_t size = -1;  // output vocab_size; -1: no tokenizer_source, the donor's config stands
  // model dir -> source row of each output row (-1: zeros); a model not listed keeps its rows.
  std::map<std::string, std::vector<int64_t>> rows;
};
// Checks and plans it before anything is written; fails naming the recipe line and the model.
VocabPlan plan_vocabulary(const Recipe& r);

// The tokenizer files (mergekit _copy_tokenizer's list) from `from`, then the recipe's
// chat_template: "auto" is the most common (stripped) template among the models (ties: the first
// in recipe order; mergekit's order there is a Python set's), else the text itself. It goes into
// tokenizer_config.json, and a copied chat_template.jinja (which transformers would prefer) is
// dropped.
void write_tokenizer(const Recipe& r, const std::string& from, const std::string& to);

}  // namespace lamina
