// The syntax of the Jinja subset (jinja.h): the template split into text and tags with
// jinja2's whitespace controls (trim_blocks, lstrip_blocks, "-" / "+"), expressions parsed into
// Node trees with Python's precedence, and statements into a Body tree. jinja.cpp evaluates it.
#pragma once
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "tokenizer/jinja.h"

namespace lamina::jinja::syntax {

struct Segment {
  enum Type { Text, Expr, Stmt } type;
  std::string body;
  int line;
};

// Splits the template into text, {{ }} and {% %} (comments dropped), applying the whitespace
// controls: "-" strips all white space on that side; trim_blocks drops the newline after a
// block or comment tag; lstrip_blocks drops spaces and tabs before one on its line ("+" keeps).
std::vector<Segment> segments(const std::string& t, const std::string& where);

struct Node;
using NodeP = std::shared_ptr<Node>;
struct Node {
  enum Op {
    Lit,
    Name,
    Attr,
    Item,
    Slice,
    Call,
    Filter,
    Test,
    Not,
    Neg,
    Bin,
    And,
    Or,
    Cond,
    ListLit,
    DictLit
  };
  Op op;
  std::string name;  // Name / Attr / Filter / Test name, Bin operator
  Value lit;
  bool negated = false;  // Test: "is not"
  std::vector<NodeP> kids;
  std::vector<std::pair<std::string, NodeP>> kwargs;
};

struct Stmt;
using Body = std::vector<Stmt>;
struct Stmt {
  enum Type { Text, Output, If, For, Set, SetBlock, Macro, Break, Continue, Generation } type;
  Stmt(Type t, int l, std::string tx = "") : type(t), line(l), text(std::move(tx)) {}
  int line = 0;
  std::string text;                              // Text; Macro: its name
  NodeP expr;                                    // Output, For (iterable), Set (value)
  std::vector<std::pair<NodeP, Body>> branches;  // If: (condition, body), the else with null
  // For: loop names; Set and SetBlock: name [, attribute]; Macro: parameter names.
  std::vector<std::string> targets;
  std::vector<NodeP> defaults;  // Macro: each parameter's default (null: none)
  NodeP filter;                 // For: "if" condition
  Body body, else_body;         // For; SetBlock, Macro and Generation: body
};

// The whole template as statements; a syntax error or an unsupported tag throws lamina::Error
// naming `where` and the line.
Body parse(const std::string& tmpl, const std::string& where);

}  // namespace lamina::jinja::syntax
