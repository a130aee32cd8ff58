#include "io/generation_config.h"

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/jsonl.h"
#include "io/mapped_file.h"

namespace lamina {

GenerationConfig read_generation_config(const std::string& model_dir) {
  GenerationConfig g;
  const std::string path = model_dir + "/generation_config.json";
  if (!file_exists(path)) return g;
  nlohmann::json j = read_json_file(path);
  if (!j.is_object()) fail(path, ": not a JSON object");
  if (auto e = j.find("eos_token_id"); e != j.end() && !e->is_null()) {
    auto one = [&](const nlohmann::json& x) {
      if (!x.is_number_integer() || x.get<int64_t>() < 0 || x.get<int64_t>() > INT32_MAX)
        fail(path, ": eos_token_id: ", x.dump().substr(0, 80), " is not a token id");
      g.eos_token_ids.push_back(int32_t(x.get<int64_t>()));
    };
    if (e->is_array())
      for (auto& x : *e) one(x);
    else
      one(*e);
  }
  if (auto c = j.find("chat_condition"); c != j.end() && !c->is_null()) {
    if (!c->is_string()) fail(path, ": chat_condition: not a string");
    g.chat_condition = c->get<std::string>();
  }
  return g;
}

}  // namespace lamina
