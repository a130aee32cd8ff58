// lamina plot: curves from metrics.jsonl files on one SVG (e.g. base vs up-scaled eval loss).
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "core/error.h"
#include "io/jsonl.h"
#include "train/plot.h"

namespace lamina {

int cmd_plot(int argc, char** argv) {
  Args a("plot",
         "Plot one metric of several training runs on one SVG. Each --run is "
         "METRICS.jsonl[:LABEL]; the\n"
         "x axis is the step (or --x, e.g. tokens) and the y axis --metric.",
         {{"run", "FILE[:LABEL]", "a metrics.jsonl written by lamina pretrain", kRequired, true},
          {"metric", "KEY", "the field to plot", "eval_loss"},
          {"x", "KEY", "the field for the x axis", "step"},
          {"x-scale", "S", "multiply x by S (e.g. tokens per step)", "1"},
          {"title", "TEXT", "plot title", ""},
          {"out", "SVG", "output file", kRequired}});
  if (!a.parse(argc, argv)) return 0;
  const char* colors[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"};
  std::vector<Series> series;
  const std::string key = a.str("metric"), xkey = a.str("x");
  const double xs = a.number("x-scale");
  for (auto& spec : a.all("run")) {
    std::string file = spec, label = spec;
    if (auto c = spec.rfind(':'); c != std::string::npos)
      file = spec.substr(0, c), label = spec.substr(c + 1);
    Series s{label, colors[series.size() % 6], {}};
    for_each_jsonl_line(file, [&](const std::string& line, int64_t n) {
      nlohmann::json j = parse_json_line(line, file + ":" + std::to_string(n));
      if (j.contains(key) && j[key].is_number() && j.contains(xkey) && j[xkey].is_number())
        s.points.push_back({j[xkey].get<double>() * xs, j[key].get<double>()});
    });
    if (s.points.empty()) fail(file, ": no line has both '", xkey, "' and '", key, "'");
    series.push_back(std::move(s));
  }
  write_svg_plot(a.str("out"), a.given("title") ? a.str("title") : key, series);
  std::printf("wrote %s (%zu runs)\n", a.str("out").c_str(), series.size());
  return 0;
}

}  // namespace lamina
