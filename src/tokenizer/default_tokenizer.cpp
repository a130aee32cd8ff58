#include "tokenizer/default_tokenizer.h"

#include <fcntl.h>
#include <sentencepiece_trainer.h>
#include <unistd.h>

#include <cstdio>
#include <sstream>
#include <vector>

#include "core/error.h"

namespace lamina {

const std::string& default_corpus() {
  static const std::string text = R"(The river runs past the old mill and under the stone bridge.
In the morning the baker opens the shop and the smell of bread fills the street.
Children walk to school with their books, and the teacher waits at the door.
A language model reads a sequence of tokens and predicts the next one.
Depth up-scaling copies the layers of a model, drops some of them, and stacks the rest.
The stacked model is trained again on plain text until it recovers and then improves.
Conditioned fine-tuning marks each conversation with the quality of its source.
Expert answers count fully in the loss; weaker answers count for a tenth.
Preference optimisation compares a chosen answer with a rejected one for the same prompt.
The reference model stays frozen while the policy learns to prefer the better answer.
A mixture of experts sends each token to two of eight feed-forward networks.
The router scores every expert, keeps the best two, and mixes their outputs.
Numbers matter: 1, 2, 3, 10, 42, 100, 2024, 3.14, and 0.5 appear in many texts.
What is the capital of France? Paris is the capital of France.
How many legs does a spider have? A spider has eight legs.
Please write a short poem about the sea. The sea is wide, the sea is deep, it sings the sailors all to sleep.
She said that the weather would be fine, but it rained all afternoon.
They built a small house near the forest, with a garden full of apples and pears.
The cat sat on the warm window sill and watched the birds in the tree.
Good software is tested, measured, and explained in plain words.
When the train arrived, the station was full of people carrying bags and umbrellas.
The scientist wrote her results in a notebook and checked every number twice.
Questions and answers, stories and letters, recipes and reports are all kinds of text.
Thank you for your help. You are welcome. Have a nice day!
)";
  return text;
}

namespace {

class LineIterator : public sentencepiece::SentenceIterator {
 public:
  explicit LineIterator(const std::vector<std::string>& lines) {
    for (auto& l : lines)
      if (!l.empty()) lines_.push_back(l);
  }
  bool done() const override { return i_ >= lines_.size(); }
  void Next() override { ++i_; }
  const std::string& value() const override { return lines_[i_]; }
  sentencepiece::util::Status status() const override { return {}; }

 private:
  std::vector<std::string> lines_;
  size_t i_ = 0;
};

}  // namespace

void train_default_tokenizer(const std::string& path, int vocab_size) {
  std::vector<std::string> lines;
  std::istringstream s(default_corpus());
  for (std::string l; std::getline(s, l);) lines.push_back(l);
  train_tokenizer(lines, path, vocab_size);
}

void train_tokenizer(const std::vector<std::string>& lines, const std::string& path, int vocab_size,
                     const std::string& model_type, int64_t max_sentences) {
  if (model_type != "bpe" && model_type != "unigram")
    fail("--model-type: expected bpe or unigram, got '", model_type, "'");
  if (vocab_size < 260)
    fail("--vocab-size ", vocab_size, ": must leave room for 3 specials and 256 byte pieces");
  std::string prefix =
      path.substr(0, path.size() - (path.size() > 6 && path.ends_with(".model") ? 6 : 0));
  LineIterator it(lines);
  if (it.done()) fail("tokenizer training: no text");
  std::ostringstream args;
  args << "--model_prefix=" << prefix << " --vocab_size=" << vocab_size
       << " --model_type=" << model_type << " --input_sentence_size=" << max_sentences
       << " --shuffle_input_sentence=true"
       << " --byte_fallback=true --character_coverage=1.0 --hard_vocab_limit=false"
       << " --unk_id=0 --bos_id=1 --eos_id=2 --pad_id=-1 --split_digits=true --minloglevel=2"
       << " --num_threads=1 --add_dummy_prefix=true";
  // The trainer logs its command line to stderr before --minloglevel applies: silence it.
  std::fflush(stderr);
  int saved = dup(2), devnull = open("/dev/null", O_WRONLY);
  if (devnull >= 0) dup2(devnull, 2);
  auto st = sentencepiece::SentencePieceTrainer::Train(args.str(), &it);
  if (saved >= 0) dup2(saved, 2), close(saved);
  if (devnull >= 0) close(devnull);
  if (!st.ok()) fail(path, ": training the tokenizer failed: ", st.ToString());
  std::remove((prefix + ".vocab").c_str());
}

}  // namespace lamina
