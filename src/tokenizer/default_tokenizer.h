// A small SentencePiece BPE tokenizer trained on an embedded English text, for the embedded
// default model (`lamina init` without --tokenizer): no download, deterministic.
#pragma once
#include <string>

namespace lamina {

// Trains with Llama's conventions (unk 0, <s> 1, </s> 2, byte fallback, dummy prefix) and writes
// the model to `path`. vocab_size is an upper bound: the trainer may stop earlier on little text.
void train_default_tokenizer(const std::string& path, int vocab_size);
// The embedded training text.
const std::string& default_corpus();

}  // namespace lamina
