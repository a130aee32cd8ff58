// Rows as the evaluation datasets publish them on the Hugging Face Hub, turned into the fields the
// shipped task definitions use, exactly as lm-evaluation-harness 0.4.13's task code does
// (`process_docs`, `doc_to_choice` / `doc_to_target` expressions and the Python preprocessors).
// Rows already in lamina's processed form (documented in docs/EVAL.md) pass through unchanged.
#pragma once
#include <nlohmann/json.hpp>
#include <string>

namespace lamina {

// kind: arc | hellaswag | mmlu | truthfulqa_mc2 | winogrande | gsm8k | "" (none). Errors name
// `where` (file:line) and the field.
nlohmann::json preprocess_row(const std::string& kind, const nlohmann::json& row,
                              const std::string& where);
bool known_preprocessor(const std::string& kind);

// HellaSwag's `preprocess(text)`: strip, " [title]" -> ". ", drop "[...]" spans, "  " -> " ".
std::string hellaswag_clean(const std::string& text);
// Python's str.strip() for ASCII whitespace and str.capitalize() for ASCII letters (other
// characters are left as they are).
std::string python_strip(const std::string& s);
std::string python_capitalize(const std::string& s);

}  // namespace lamina
