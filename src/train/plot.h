// Loss curves as a small self-contained SVG (no plotting dependency): train loss per step and
// eval loss at its steps, with axes and labels.
#pragma once
#include <string>
#include <utility>
#include <vector>

namespace lamina {

struct Series {
  std::string name, color;
  std::vector<std::pair<double, double>> points;  // (step, value)
};

void write_svg_plot(const std::string& path, const std::string& title,
                    const std::vector<Series>& series);
// OUT_DIR/loss.svg (train and eval loss) from a run's metrics.jsonl, and OUT_DIR/rewards.svg
// (DPO's chosen / rejected rewards and margins) when it has them.
void plot_training_metrics(const std::string& metrics_path, const std::string& out_dir,
                           const std::string& title);

}  // namespace lamina
