// PythonRandom against CPython 3.11 itself: the expected values were printed by
//   python3 -c "import random; r = random.Random(1234); print(...)"
// (the calls are in each test's comment); lm-eval's few-shot choice depends on every bit.
#include <gtest/gtest.h>

#include "eval/python_random.h"

using lamina::PythonRandom;

TEST(PythonRandom, GetrandbitsAfterIntegerSeed) {
  PythonRandom r(1234);  // [r.getrandbits(32) for _ in range(3)]
  EXPECT_EQ(r.getrandbits(32), 4150886329u);
  EXPECT_EQ(r.getrandbits(32), 3342196574u);
  EXPECT_EQ(r.getrandbits(32), 1892932127u);
  PythonRandom big((uint64_t(1) << 40) + 7);  // Random(2**40 + 7).getrandbits(32): two key words
  EXPECT_EQ(big.getrandbits(32), 2635837658u);
}

TEST(PythonRandom, SampleBothAlgorithms) {
  PythonRandom r(1234);  // r.sample(range(1119), 26): the set-based branch (n > setsize)
  const std::vector<size_t> want{902, 239, 15,  185, 71,  171, 201, 726,  484, 35,  63,  32,   708,
                                 991, 949, 304, 186, 374, 234, 29,  1030, 996, 511, 132, 1108, 954};
  EXPECT_EQ(r.sample(1119, 26), want);
  PythonRandom s(1234);  // r.sample(range(10), 6) twice: the pool branch, state carried over
  EXPECT_EQ(s.sample(10, 6), (std::vector<size_t>{7, 1, 0, 9, 4, 6}));
  EXPECT_EQ(s.sample(10, 6), (std::vector<size_t>{1, 9, 5, 8, 0, 7}));
  PythonRandom t(42);  // r.sample(range(5), 5), r.getrandbits(40), r.getrandbits(64)
  EXPECT_EQ(t.sample(5, 5), (std::vector<size_t>{0, 4, 2, 1, 3}));
  EXPECT_EQ(t.getrandbits(40), 151282538206ull);
  EXPECT_EQ(t.getrandbits(64), 1890702223848595625ull);
}

TEST(PythonRandom, Shuffle) {
  PythonRandom r(42);  // x = list(range(10)); r.shuffle(x); x, r.getrandbits(32)
  EXPECT_EQ(r.shuffle(10), (std::vector<size_t>{7, 3, 2, 8, 5, 6, 9, 4, 0, 1}));
  EXPECT_EQ(r.getrandbits(32), 2536146025u);
}
