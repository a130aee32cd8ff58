#include "train/plot.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "io/jsonl.h"
#include "io/output_dir.h"

namespace lamina {

void write_svg_plot(const std::string& path, const std::string& title,
                    const std::vector<Series>& series) {
  const double W = 720, Hh = 420, L = 60, R = 20, T = 40, B = 50;
  double x0 = 1e300, x1 = -1e300, y0 = 1e300, y1 = -1e300;
  for (auto& s : series)
    for (auto& [x, y] : s.points) {
      if (!std::isfinite(y)) continue;
      x0 = std::min(x0, x), x1 = std::max(x1, x), y0 = std::min(y0, y), y1 = std::max(y1, y);
    }
  if (x0 > x1) x0 = 0, x1 = 1, y0 = 0, y1 = 1;
  if (x1 == x0) x1 = x0 + 1;
  if (y1 == y0) y1 = y0 + 1;
  const double pad = (y1 - y0) * 0.05;
  y0 -= pad, y1 += pad;
  auto px = [&](double x) { return L + (x - x0) / (x1 - x0) * (W - L - R); };
  auto py = [&](double y) { return T + (1 - (y - y0) / (y1 - y0)) * (Hh - T - B); };
  std::ostringstream o;
  o << "<svg xmlns='http://www.w3.org/2000/svg' width='" << W << "' height='" << Hh
    << "' font-family='sans-serif' font-size='12'>\n";
  o << "<rect width='100%' height='100%' fill='white'/>\n";
  o << "<text x='" << W / 2 << "' y='22' text-anchor='middle' font-size='15'>" << title
    << "</text>\n";
  o << "<line x1='" << L << "' y1='" << Hh - B << "' x2='" << W - R << "' y2='" << Hh - B
    << "' stroke='black'/>\n";
  o << "<line x1='" << L << "' y1='" << T << "' x2='" << L << "' y2='" << Hh - B
    << "' stroke='black'/>\n";
  char buf[64];
  for (int i = 0; i <= 5; ++i) {
    double y = y0 + (y1 - y0) * i / 5, x = x0 + (x1 - x0) * i / 5;
    std::snprintf(buf, sizeof buf, "%.3g", y);
    o << "<text x='" << L - 6 << "' y='" << py(y) + 4 << "' text-anchor='end'>" << buf
      << "</text>\n";
    o << "<line x1='" << L << "' y1='" << py(y) << "' x2='" << W - R << "' y2='" << py(y)
      << "' stroke='#eee'/>\n";
    std::snprintf(buf, sizeof buf, "%.0f", x);
    o << "<text x='" << px(x) << "' y='" << Hh - B + 16 << "' text-anchor='middle'>" << buf
      << "</text>\n";
  }
  o << "<text x='" << W / 2 << "' y='" << Hh - 12 << "' text-anchor='middle'>step</text>\n";
  int li = 0;
  for (auto& s : series) {
    if (s.points.empty()) continue;
    o << "<polyline fill='none' stroke='" << s.color << "' stroke-width='1.5' points='";
    for (auto& [x, y] : s.points)
      if (std::isfinite(y)) o << px(x) << "," << py(y) << " ";
    o << "'/>\n";
    if (s.points.size() < 40)
      for (auto& [x, y] : s.points)
        if (std::isfinite(y))
          o << "<circle cx='" << px(x) << "' cy='" << py(y) << "' r='2.5' fill='" << s.color
            << "'/>\n";
    o << "<text x='" << W - R - 6 << "' y='" << T + 16 + 16 * li << "' text-anchor='end' fill='"
      << s.color << "'>" << s.name << "</text>\n";
    ++li;
  }
  o << "</svg>\n";
  write_file_atomic(path, o.str());
}

void plot_training_metrics(const std::string& metrics_path, const std::string& out_dir,
                           const std::string& title) {
  using json = nlohmann::json;
  Series train{"train loss", "#1f77b4", {}}, eval{"eval loss", "#d62728", {}};
  Series rc{"rewards/chosen", "#2ca02c", {}}, rr{"rewards/rejected", "#d62728", {}},
      rm{"rewards/margins", "#1f77b4", {}};
  for_each_jsonl_line(metrics_path, [&](const std::string& line, int64_t n) {
    const json j = parse_json_line(line, metrics_path + ":" + std::to_string(n));
    if (j.contains("rewards/margins")) {
      const double st = j["step"].get<double>();
      rc.points.push_back({st, j["rewards/chosen"].get<double>()});
      rr.points.push_back({st, j["rewards/rejected"].get<double>()});
      rm.points.push_back({st, j["rewards/margins"].get<double>()});
    }
    if (j.contains("loss"))
      train.points.push_back({j["step"].get<double>(), j["loss"].get<double>()});
    if (j.contains("eval_loss") && j["eval_loss"].is_number())
      eval.points.push_back({j["step"].get<double>(), j["eval_loss"].get<double>()});
  });
  write_svg_plot(out_dir + "/loss.svg", title, {train, eval});
  if (!rm.points.empty())
    write_svg_plot(out_dir + "/rewards.svg", title + ": rewards", {rc, rr, rm});
}

}  // namespace lamina
