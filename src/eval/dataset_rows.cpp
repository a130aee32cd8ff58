#include "eval/dataset_rows.h"

#include "core/error.h"

namespace lamina {
using json = nlohmann::json;

namespace {

bool is_py_space(char c) {  // str.isspace() on ASCII: space, \t \n \v \f \r and \x1c-\x1f
  return c == ' ' || (c >= '\t' && c <= '\r') || (c >= '\x1c' && c <= '\x1f');
}

const json& field(const json& row, const char* name, const std::string& where) {
  auto it = row.find(name);
  if (it == row.end()) fail(where, ": the row has no field '", name, "'");
  return *it;
}

std::string str_field(const json& row, const char* name, const std::string& where) {
  const json& v = field(row, name, where);
  if (!v.is_string()) fail(where, ": field '", name, "' is not a string");
  return v.get<std::string>();
}

std::vector<std::string> str_list(const json& v, const std::string& name,
                                  const std::string& where) {
  if (!v.is_array()) fail(where, ": field '", name, "' is not a list");
  std::vector<std::string> out;
  for (auto& x : v) {
    if (!x.is_string()) fail(where, ": field '", name, "' holds a non-string");
    out.push_back(x.get<std::string>());
  }
  return out;
}

// A label such as "2" or "1" as an int (Python's int(label)); negative or junk refused.
int64_t int_label(const json& v, const std::string& name, const std::string& where) {
  if (v.is_number_integer()) return v.get<int64_t>();
  if (v.is_string()) {
    const std::string s = python_strip(v.get<std::string>());
    if (!s.empty() && s.size() < 10 && s.find_first_not_of("0123456789") == std::string::npos)
      return std::stoll(s);
  }
  fail(where, ": field '", name, "' is not an integer label (", v.dump().substr(0, 40), ")");
}

// ARC (allenai/ai2_arc): choices {"text": [...], "label": [...]}, answerKey one of the labels
// ("A".."E" or "1".."5"); the harness's doc_to_target is choices.label.index(answerKey).
json arc_row(const json& row, const std::string& where) {
  const json& c = field(row, "choices", where);
  if (!c.is_object()) return row;  // processed form: choices is the list of texts
  json out = row;
  auto text = str_list(field(c, "text", where), "choices.text", where);
  auto label = str_list(field(c, "label", where), "choices.label", where);
  if (text.size() != label.size()) fail(where, ": choices.text and choices.label differ in length");
  const std::string key = str_field(row, "answerKey", where);
  int64_t gold = -1;
  for (size_t i = 0; i < label.size(); ++i)
    if (label[i] == key) gold = int64_t(i);
  if (gold < 0) fail(where, ": answerKey '", key, "' is not among choices.label");
  out["choices"] = text;
  out["answer"] = gold;
  return out;
}

// HellaSwag (Rowan/hellaswag), the harness's utils.process_docs.
json hellaswag_row(const json& row, const std::string& where) {
  if (!row.contains("ctx_a")) return row;
  json out = row;
  const std::string ctx =
      str_field(row, "ctx_a", where) + " " + python_capitalize(str_field(row, "ctx_b", where));
  out["query"] = hellaswag_clean(str_field(row, "activity_label", where) + ": " + ctx);
  std::vector<std::string> ends;
  for (auto& e : str_list(field(row, "endings", where), "endings", where))
    ends.push_back(hellaswag_clean(e));
  out["choices"] = ends;
  out["answer"] = int_label(field(row, "label", where), "label", where);
  return out;
}

// MMLU (cais/mmlu): {question, subject, choices: [4], answer: 0..3}. The harness strips the
// question in its template ({{question.strip()}}) and names the subject with spaces.
json mmlu_row(const json& row, const std::string& where) {
  json out = row;
  if (row.contains("choices") && !row.contains("A")) {
    auto c = str_list(row["choices"], "choices", where);
    if (c.size() != 4) fail(where, ": MMLU rows have 4 choices, this one ", c.size());
    out["A"] = c[0], out["B"] = c[1], out["C"] = c[2], out["D"] = c[3];
  }
  out["question"] = python_strip(str_field(row, "question", where));
  if (row.contains("subject")) {
    std::string s = str_field(row, "subject", where);
    for (char& ch : s)
      if (ch == '_') ch = ' ';
    out["subject"] = s;
  }
  return out;
}

// TruthfulQA multiple_choice config: mc2_targets {choices, labels}.
json truthfulqa_mc2_row(const json& row, const std::string& where) {
  if (!row.contains("mc2_targets")) return row;
  const json& t = row["mc2_targets"];
  if (!t.is_object()) fail(where, ": field 'mc2_targets' is not an object");
  json out = row;
  out["choices"] = str_list(field(t, "choices", where), "mc2_targets.choices", where);
  const json& labels = field(t, "labels", where);
  if (!labels.is_array() || labels.size() != out["choices"].size())
    fail(where, ": mc2_targets.labels must give one 0/1 per choice");
  out["labels"] = labels;
  return out;
}

// Winogrande (allenai/winogrande): sentence with one "_", option1/2, answer "1"/"2"; the harness's
// preprocess_winogrande: contexts sentence[:_] + option, target sentence[_+1:].strip().
json winogrande_row(const json& row, const std::string& where) {
  if (!row.contains("sentence")) return row;
  json out = row;
  const std::string s = str_field(row, "sentence", where);
  const size_t idx = s.find('_');
  if (idx == std::string::npos) fail(where, ": field 'sentence' has no '_' blank");
  out["prefix"] = s.substr(0, idx);
  out["continuation"] = python_strip(s.substr(idx + 1));
  out["choices"] = {str_field(row, "option1", where), str_field(row, "option2", where)};
  const int64_t a = int_label(field(row, "answer", where), "answer", where);
  if (a != 1 && a != 2) fail(where, ": field 'answer' is \"1\" or \"2\"");
  out["answer"] = a - 1;
  return out;
}

}  // namespace

std::string python_strip(const std::string& s) {
  size_t a = 0, b = s.size();
  while (a < b && is_py_space(s[a])) ++a;
  while (b > a && is_py_space(s[b - 1])) --b;
  return s.substr(a, b - a);
}

std::string python_capitalize(const std::string& s) {
  std::string out = s;
  for (size_t i = 0; i < out.size(); ++i) {
    const char c = out[i];
    if (i == 0 && c >= 'a' && c <= 'z') out[i] = char(c - 'a' + 'A');
    if (i > 0 && c >= 'A' && c <= 'Z') out[i] = char(c - 'A' + 'a');
  }
  return out;
}

std::string hellaswag_clean(const std::string& text) {
  auto replace_all = [](const std::string& s, const std::string& from, const std::string& to) {
    std::string out;  // str.replace: left to right, non-overlapping
    size_t i = 0;
    for (size_t j; (j = s.find(from, i)) != std::string::npos; i = j + from.size())
      out += s.substr(i, j - i) + to;
    return out + s.substr(i);
  };
  std::string t = replace_all(python_strip(text), " [title]", ". ");
  // re.sub("\\[.*?\\]", "", t): '.' stops at a newline, so a '[' without ']' before one stays.
  std::string u;
  for (size_t i = 0; i < t.size(); ++i) {
    if (t[i] == '[') {
      const size_t j = t.find_first_of("]\n", i + 1);
      if (j != std::string::npos && t[j] == ']') {
        i = j;
        continue;
      }
    }
    u += t[i];
  }
  return replace_all(u, "  ", " ");
}

bool known_preprocessor(const std::string& kind) {
  return kind.empty() || kind == "arc" || kind == "hellaswag" || kind == "mmlu" ||
         kind == "truthfulqa_mc2" || kind == "winogrande" || kind == "gsm8k";
}

json preprocess_row(const std::string& kind, const json& row, const std::string& where) {
  if (kind == "arc") return arc_row(row, where);
  if (kind == "hellaswag") return hellaswag_row(row, where);
  if (kind == "mmlu") return mmlu_row(row, where);
  if (kind == "truthfulqa_mc2") return truthfulqa_mc2_row(row, where);
  if (kind == "winogrande") return winogrande_row(row, where);
  return row;  // gsm8k's rows are used as published; "" is no preprocessing
}

}  // namespace lamina
