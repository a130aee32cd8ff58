// libFuzzer target for lamina's text readers. The first input byte selects the reader (mod the
// number of readers), the remaining bytes are the file's contents:
//   0  JSONL            for_each_jsonl_line + jsonl_text + parse_json_line, then read_jsonl
//   1  task YAML        load_task(DIR/task.yaml); parse_yaml_text; parse_mergekit_yaml_text
//   2  tokenizer_config.json   Tokenizer::load(DIR) beside the llama2 tokenizer.model
//   3  config.json      ModelConfig::from_json(json::parse(bytes)), to_json, param_count
//   4  tokenizer.json   Tokenizer::load(DIR) (its added_tokens)
//   5  added_tokens.json  Tokenizer::load(DIR)
//   6  generation_config.json  read_generation_config(DIR)
//   7  tokenizer.json (BPE) Tokenizer::load(DIR) of a directory without tokenizer.model: the
//      whole tokenizer.json pipeline (HfTokenizer), then an encode and a decode
// Every reader must either succeed or throw lamina::Error. Only lamina::Error is caught here, so
// any other exception (nlohmann, yaml-cpp, std::filesystem, std::sto*) escapes and libFuzzer
// reports it as a crash, as it does ASan/UBSan findings.
//
// Files are written under a per-process directory (/dev/shm, else the system temp dir) named
// lamina-fuzz-<pid>, removed at normal exit (after a crash, by the next run). The SentencePiece
// model is $LAMINA_FUZZ_ASSETS/tokenizers/llama2/tokenizer.model (else the LAMINA_FUZZ_ASSETS
// define; run.sh sets both to the repository's tests/assets), symlinked into each tokenizer
// directory. Tokenizer::load parses that 500 KB model for every input of readers 2, 4 and 5
// (~35 ms under ASan, against ~1 ms for the others): lamina has no entry point that parses the
// JSON files against an already loaded model.
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "core/error.h"
#include "eval/task.h"
#include "io/generation_config.h"
#include "io/jsonl.h"
#include "io/model_config.h"
#include "io/yaml_file.h"
#include "surgery/recipe.h"
#include "tokenizer/hf_tokenizer.h"
#include "tokenizer/tokenizer.h"

namespace fs = std::filesystem;

namespace {

fs::path g_root;  // lamina-fuzz-<pid>
fs::path g_jsonl, g_task, g_tok_cfg, g_tok_json, g_tok_added, g_gen, g_tok_bpe;
bool g_verbose = false;  // LAMINA_FUZZ_VERBOSE=1: print each lamina::Error (to check seeds)

void note(const lamina::Error& e) {
  if (g_verbose) std::fprintf(stderr, "lamina::Error: %s\n", e.what());
}

void write_file(const fs::path& p, const uint8_t* data, size_t size) {
  std::FILE* f = std::fopen(p.c_str(), "wb");
  if (!f) {
    std::perror(p.c_str());
    std::abort();
  }
  if (size && std::fwrite(data, 1, size, f) != size) std::abort();
  std::fclose(f);
}

// What a crashed run left behind (its process is gone).
void remove_stale_dirs(const fs::path& base) {
  std::error_code ec;
  for (auto it = fs::directory_iterator(base, ec); !ec && it != fs::directory_iterator();
       it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.rfind("lamina-fuzz-", 0) != 0) continue;
    char* end = nullptr;
    const long pid = std::strtol(name.c_str() + 12, &end, 10);
    if (pid <= 0 || *end) continue;
    if (kill(pid_t(pid), 0) != 0 && errno == ESRCH) {
      std::error_code rm;
      fs::remove_all(it->path(), rm);
    }
  }
}

void remove_root() {
  std::error_code ec;
  fs::remove_all(g_root, ec);
}

fs::path tokenizer_model() {
  const char* env = std::getenv("LAMINA_FUZZ_ASSETS");
#ifdef LAMINA_FUZZ_ASSETS
  std::string assets = env && *env ? env : LAMINA_FUZZ_ASSETS;
#else
  std::string assets = env && *env ? env : "tests/assets";
#endif
  fs::path p = fs::absolute(fs::path(assets) / "tokenizers/llama2/tokenizer.model");
  if (!fs::is_regular_file(p)) {
    std::fprintf(stderr, "text_readers_fuzz: %s not found (set LAMINA_FUZZ_ASSETS)\n", p.c_str());
    std::exit(1);
  }
  return p;
}

// A tokenizer directory: tokenizer.model (a symlink) and, per input, one JSON file beside it.
fs::path make_tokenizer_dir(const std::string& name, const fs::path& model) {
  fs::path d = g_root / name;
  fs::create_directories(d);
  fs::create_symlink(model, d / "tokenizer.model");
  return d;
}

void ignore_error(void (*fn)(const uint8_t*, size_t), const uint8_t* d, size_t n) {
  try {
    fn(d, n);
  } catch (const lamina::Error& e) {
    note(e);
  }
}

void fuzz_jsonl(const uint8_t* d, size_t n) {
  write_file(g_jsonl, d, n);
  const std::string path = g_jsonl.string();
  lamina::for_each_jsonl_line(path, [&](const std::string& line, int64_t k) {
    const std::string where = path + ":" + std::to_string(k);
    try {
      (void)lamina::jsonl_text(line, where);
    } catch (const lamina::Error& e) {  // not a {"text": ...} line: the other readers still run
      note(e);
    }
    (void)lamina::parse_json_line(line, where).dump();
  });
  (void)lamina::read_jsonl(path);
}

void fuzz_yaml(const uint8_t* d, size_t n) {
  write_file(g_task, d, n);
  const std::string text(reinterpret_cast<const char*>(d), n);
  try {
    (void)lamina::load_task(g_task.string());
  } catch (const lamina::Error& e) {
    note(e);
  }
  try {
    (void)lamina::parse_yaml_text(text, "fuzz.yaml");
  } catch (const lamina::Error& e) {
    note(e);
  }
  auto r = lamina::parse_mergekit_yaml_text(text, "fuzz.yaml", g_task.parent_path().string());
  // Not r.num_layers(): it sums unvalidated layer_range ends (signed overflow for [0, 2^63-1]
  // twice); upscale() only calls it once the ranges are checked against the models.
  (void)r.to_yaml();
}

void load_tokenizer(const fs::path& dir) {
  auto t = lamina::Tokenizer::load(dir.string());
  (void)t.size();
  (void)t.bos_text();
  (void)t.eos_text();
  auto ids = t.encode(t.bos_text() + "Hi <|end_of_turn|>" + t.eos_text(), t.add_bos_default());
  (void)t.decode(ids, false);
}

void fuzz_tokenizer_config(const uint8_t* d, size_t n) {
  write_file(g_tok_cfg / "tokenizer_config.json", d, n);
  load_tokenizer(g_tok_cfg);
}
void fuzz_tokenizer_json(const uint8_t* d, size_t n) {
  write_file(g_tok_json / "tokenizer.json", d, n);
  load_tokenizer(g_tok_json);
}
void fuzz_added_tokens(const uint8_t* d, size_t n) {
  write_file(g_tok_added / "added_tokens.json", d, n);
  load_tokenizer(g_tok_added);
}

void fuzz_hf_tokenizer(const uint8_t* d, size_t n) {
  write_file(g_tok_bpe / "tokenizer.json", d, n);
  auto t = lamina::Tokenizer::load(g_tok_bpe.string());
  auto ids = t.encode("Hi there,  1234 \xe4\xbd\xa0\xe5\xa5\xbd \xf0\x9f\xa4\x96\n\t<s>x", true);
  (void)t.decode(ids, false);
  (void)t.decode(ids, true);
  (void)t.vocabulary();
}

void fuzz_model_config(const uint8_t* d, size_t n) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(d, d + n);
  } catch (const nlohmann::json::exception&) {  // the harness's own parse (1e400: out_of_range)
    return;
  }
  auto c = lamina::ModelConfig::from_json(j, "config.json");
  (void)c.to_json().dump();
  (void)c.param_count();
  (void)c.active_param_count();
}

void fuzz_generation_config(const uint8_t* d, size_t n) {
  write_file(g_gen / "generation_config.json", d, n);
  (void)lamina::read_generation_config(g_gen.string());
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  g_verbose = std::getenv("LAMINA_FUZZ_VERBOSE") != nullptr;
  const fs::path model = tokenizer_model();
  std::error_code ec;
  fs::path base = fs::is_directory("/dev/shm", ec) && access("/dev/shm", W_OK) == 0
                      ? fs::path("/dev/shm")
                      : fs::temp_directory_path();
  remove_stale_dirs(base);
  g_root = base / ("lamina-fuzz-" + std::to_string(getpid()));
  fs::remove_all(g_root, ec);
  fs::create_directories(g_root / "task");
  std::atexit(remove_root);
  g_jsonl = g_root / "data.jsonl";
  g_task = g_root / "task" / "task.yaml";
  g_tok_cfg = make_tokenizer_dir("tok-config", model);
  g_tok_json = make_tokenizer_dir("tok-json", model);
  g_tok_added = make_tokenizer_dir("tok-added", model);
  g_gen = g_root / "gen";
  fs::create_directories(g_gen);
  g_tok_bpe = g_root / "tok-bpe";  // no tokenizer.model: tokenizer.json is the tokenizer
  fs::create_directories(g_tok_bpe);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  static void (*const readers[])(const uint8_t*, size_t) = {
      fuzz_jsonl,          fuzz_yaml,         fuzz_tokenizer_config,  fuzz_model_config,
      fuzz_tokenizer_json, fuzz_added_tokens, fuzz_generation_config, fuzz_hf_tokenizer,
  };
  constexpr size_t n = sizeof(readers) / sizeof(readers[0]);
  ignore_error(readers[data[0] % n], data + 1, size - 1);
  return 0;
}
