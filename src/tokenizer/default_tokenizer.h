// A small SentencePiece BPE tokenizer trained on an embedded English text, for the embedded
// default model (`lamina init` without --tokenizer): no download, deterministic.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace lamina {

// Trains with Llama's conventions (unk 0, <s> 1, </s> 2, byte fallback, dummy prefix) and writes
// the model to `path`. vocab_size is an upper bound: the trainer may stop earlier on little text.
void train_default_tokenizer(const std::string& path, int vocab_size);
// The embedded training text.
const std::string& default_corpus();

// Trains a SentencePiece model (bpe or unigram, Llama's conventions as above) on text lines.
// The trainer samples at most `max_sentences` lines (bounded memory on large corpora).
void train_tokenizer(const std::vector<std::string>& lines, const std::string& path, int vocab_size,
                     const std::string& model_type = "bpe", int64_t max_sentences = 2000000);

}  // namespace lamina
