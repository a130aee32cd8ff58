// The part of Jinja that evaluation task templates use (lm-evaluation-harness writes doc_to_text,
// doc_to_target and doc_to_choice in Jinja): `{{ expression }}`, `{% set name = expression %}`
// and the `{%-` / `-%}` whitespace controls. Expressions: document fields, string and integer
// literals, `a.b`, `a[i]`, `+`, and the Python methods and Jinja filters task files call
// (strip, lstrip, rstrip, upper, lower, split, replace, index, startswith, endswith; | join,
// | trim, | lower, | upper, | length). Values print as Jinja prints them (lists in Python's repr).
// Anything else is an error naming the template, not a silent difference.
#pragma once
#include <nlohmann/json.hpp>
#include <string>

namespace lamina {

// Renders a template against a document (its fields are the variables).
std::string render_jinja(const std::string& tmpl, const nlohmann::json& doc,
                         const std::string& where);

// A template that is a single `{{ expression }}` (spaces around allowed): the value itself (a
// list for doc_to_choice, a number for doc_to_target); otherwise the rendered string.
nlohmann::json evaluate_jinja(const std::string& tmpl, const nlohmann::json& doc,
                              const std::string& where);

// Python's repr() of a JSON value (str, int, float, list, bool, None), as Jinja prints it.
std::string python_repr(const nlohmann::json& v);

}  // namespace lamina
