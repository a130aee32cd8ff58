// Learning-rate schedules against transformers' formulas at chosen steps.
#include <gtest/gtest.h>

#include <cmath>

#include "core/error.h"
#include "train/optimizer.h"

using namespace lamina;

TEST(Schedule, WarmupStepsRoundUpAsTransformers) {
  EXPECT_EQ(warmup_steps_for(0.05, 1000), 50);
  EXPECT_EQ(warmup_steps_for(0.1, 15), 2);  // ceil(1.5)
  EXPECT_EQ(warmup_steps_for(0.0, 15), 0);
  EXPECT_THROW(warmup_steps_for(1.5, 10), Error);
}

TEST(Schedule, LinearWithWarmup) {
  ScheduleConfig s{Schedule::Linear, 100, 10, 0.0};
  EXPECT_DOUBLE_EQ(lr_factor(s, 0), 0.0);  // LambdaLR's first step
  EXPECT_DOUBLE_EQ(lr_factor(s, 5), 0.5);
  EXPECT_DOUBLE_EQ(lr_factor(s, 10), 1.0);
  EXPECT_DOUBLE_EQ(lr_factor(s, 55), 0.5);  // (100 - 55) / (100 - 10)
  EXPECT_DOUBLE_EQ(lr_factor(s, 100), 0.0);
}

TEST(Schedule, CosineWithWarmupAndFloor) {
  ScheduleConfig s{Schedule::Cosine, 110, 10, 0.0};
  EXPECT_DOUBLE_EQ(lr_factor(s, 10), 1.0);
  EXPECT_NEAR(lr_factor(s, 60), 0.5, 1e-12);  // half way: 0.5 * (1 + cos(pi/2))
  EXPECT_NEAR(lr_factor(s, 35), 0.5 * (1 + std::cos(M_PI * 0.25)), 1e-12);
  EXPECT_NEAR(lr_factor(s, 110), 0.0, 1e-12);
  // OpenChat's schedule: cosine to a 10% floor.
  ScheduleConfig f{Schedule::Cosine, 110, 10, 0.1};
  EXPECT_NEAR(lr_factor(f, 110), 0.1, 1e-12);
  EXPECT_NEAR(lr_factor(f, 60), 0.1 + 0.9 * 0.5, 1e-12);
}

TEST(Schedule, Constant) {
  ScheduleConfig s{Schedule::Constant, 50, 4, 0.0};
  EXPECT_DOUBLE_EQ(lr_factor(s, 2), 0.5);
  EXPECT_DOUBLE_EQ(lr_factor(s, 40), 1.0);
  EXPECT_THROW(parse_schedule("polynomial"), Error);
}
