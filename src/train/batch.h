// Training rows and where they come from: a row is T input ids with their targets, loss weights
// and packed-sequence lengths; TrainData hands rows out by index; make_batch stacks rows into the
// Batch TrainGraph runs.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <string>
#include <vector>

namespace lamina {

struct Batch;

// One training row: T input ids, the ids they predict (-1: none), loss weights, and the lengths
// of the sequences packed into it (empty: one sequence).
struct TrainRow {
  std::vector<int32_t> tokens, targets;
  std::vector<float> weights;
  std::vector<int32_t> segments;
  std::vector<float> extra;  // objective-specific (DPO: the pair's reference log-probabilities)
};

// Where rows come from (a text corpus, packed conversations, ...).
class TrainData {
 public:
  virtual ~TrainData() = default;
  virtual int64_t num_train() const = 0;
  virtual int64_t num_val() const = 0;
  virtual void train_row(int64_t i, TrainRow& r) const = 0;
  virtual void val_row(int64_t i, TrainRow& r) const = 0;
  virtual std::string signature() const = 0;  // identifies the data for --resume
  virtual std::string describe() const = 0;   // "N tokens" etc., for errors
};

// Rows held in memory (conversations, preference pairs: small next to pretraining corpora).
class InMemoryData : public TrainData {
 public:
  InMemoryData(std::vector<TrainRow> train, std::vector<TrainRow> val, std::string signature,
               std::string what)
      : train_(std::move(train)),
        val_(std::move(val)),
        sig_(std::move(signature)),
        what_(std::move(what)) {}
  int64_t num_train() const override { return int64_t(train_.size()); }
  int64_t num_val() const override { return int64_t(val_.size()); }
  void train_row(int64_t i, TrainRow& r) const override { r = train_[size_t(i)]; }
  void val_row(int64_t i, TrainRow& r) const override { r = val_[size_t(i)]; }
  std::string signature() const override { return sig_; }
  std::string describe() const override { return std::to_string(train_.size()) + " " + what_; }

 private:
  std::vector<TrainRow> train_, val_;
  std::string sig_, what_;
};

// Fills a row up to T with a padding segment (pad ids, no targets, weight 0).
void pad_row(TrainRow& r, int64_t T, int32_t pad);
// Rows -> a Batch (all rows of length T).
Batch make_batch(const std::vector<TrainRow>& rows, int64_t T);
// The seeded held-out split SFT and DPO share: ceil(n * fraction) items (at least one when
// fraction > 0) to `val`, the rest to `train`, in an order shuffled by `seed`.
template <class T>
void seeded_split(std::vector<T>& items, double fraction, uint64_t seed, std::vector<T>& train,
                  std::vector<T>& val) {
  std::vector<size_t> idx(items.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::mt19937_64 rng(seed);
  std::shuffle(idx.begin(), idx.end(), rng);
  const size_t n_val =
      fraction > 0 ? std::max<size_t>(1, size_t(std::ceil(double(items.size()) * fraction))) : 0;
  for (size_t i = 0; i < idx.size(); ++i)
    (i < n_val ? val : train).push_back(std::move(items[idx[i]]));
}

}  // namespace lamina
