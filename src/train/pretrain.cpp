// Continued pretraining on raw text (SOLAR's step after depth up-scaling): windows of a
// tokenized corpus, trained by the shared loop (train/loop.h).
#include "train/pretrain.h"

#include <cmath>
#include <filesystem>

#include "core/interrupt.h"
#include "tokenizer/tokenizer.h"
#include "train/corpus.h"
#include "train/loop.h"
#include "train/training_store.h"

namespace lamina {
namespace fs = std::filesystem;

namespace {

// Text corpus windows: row i is window i (training), validation windows follow the training ones.
class CorpusData : public TrainData {
 public:
  CorpusData(TokenCorpus c, int64_t T, double val_fraction) : c_(std::move(c)), T_(T) {
    const int64_t w = c_.num_windows(T);
    n_val_ =
        val_fraction > 0 ? std::max<int64_t>(1, int64_t(std::ceil(double(w) * val_fraction))) : 0;
    n_train_ = std::max<int64_t>(0, w - n_val_);
  }
  int64_t num_train() const override { return n_train_; }
  int64_t num_val() const override { return n_val_; }
  void train_row(int64_t i, TrainRow& r) const override { row(i, r); }
  void val_row(int64_t i, TrainRow& r) const override { row(n_train_ + i, r); }
  std::string signature() const override { return fs::path(c_.cache_file()).filename().string(); }
  std::string describe() const override { return std::to_string(c_.num_tokens()) + " tokens"; }

 private:
  void row(int64_t i, TrainRow& r) const {
    c_.window(i, T_, ids_);
    r.tokens.assign(ids_.begin(), ids_.end() - 1);
    r.targets.assign(ids_.begin() + 1, ids_.end());
    r.weights.assign(size_t(T_), 1.0f);
    r.segments.clear();
  }
  TokenCorpus c_;
  int64_t T_, n_train_ = 0, n_val_ = 0;
  mutable std::vector<int32_t> ids_;
};

}  // namespace

TrainResult run_pretrain(const TrainOptions& o) {
  enable_interrupt_polling();
  const auto lock = lock_run(o);
  ParamStore p = load_training_store(o);
  Tokenizer tok = Tokenizer::load(o.tokenizer_dir());
  prepare_training(o, p);
  std::string cache = o.cache_dir.empty() ? o.out + "/.cache" : o.cache_dir;
  CorpusData data(
      TokenCorpus::build(o.data, tok, o.tokenizer_dir() + "/tokenizer.model", cache, o.progress),
      o.seq_len, o.val_fraction);
  return train_loop(o, p, data, {}, "lamina pretrain: " + fs::path(o.model).filename().string());
}

}  // namespace lamina
