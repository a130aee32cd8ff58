// lamina imatrix: llama.cpp's importance matrix of a model on a calibration text, as
// llama-imatrix computes it, for export-gguf --imatrix (and llama-quantize --imatrix).
#include <cstdio>
#include <filesystem>

#include "commands.h"
#include "core/error.h"
#include "core/progress.h"
#include "io/mapped_file.h"
#include "model/imatrix.h"

namespace lamina {

int cmd_imatrix(int argc, char** argv) {
  Args a(
      "imatrix",
      "Compute llama.cpp's importance matrix of a model on a calibration text, as llama-imatrix\n"
      "does: the text tokenized whole, cut into chunks of --ctx tokens, each evaluated as a\n"
      "fresh sequence starting with BOS; for every matrix the sum over tokens of each input\n"
      "column's squared activation (Mixtral: per expert, over the tokens routed to it). Prints\n"
      "the perplexity over each chunk's second half, as llama-imatrix does. The file (GGUF, or\n"
      "the legacy .dat format) feeds export-gguf --imatrix and llama-quantize --imatrix.",
      join_specs(model_arg_specs(),
                 std::vector<ArgSpec>{
                     {"data", "FILE", "calibration text", kRequired},
                     {"out", "FILE", "output imatrix file", "imatrix.gguf"},
                     {"output-format", "gguf|dat",
                      "file format (default: dat for a .dat output, else gguf)", ""},
                     {"ctx", "N", "tokens per chunk", "512"},
                     {"chunks", "N", "most chunks to evaluate; 0 = all", "0"},
                     {"process-output", "", "collect the LM head's inputs too (output.weight)", ""},
                     {"no-ppl", "", "do not compute the perplexity", ""},
                     {"force", "", "replace an existing output file", ""}}));
  if (!a.parse(argc, argv)) return 0;
  const std::string out = a.str("out");
  if (std::filesystem::exists(out) && !a.flag("force"))
    fail(out, ": exists (pass --force to replace it)");
  const bool legacy = a.given("output-format")
                          ? a.str("output-format") == "dat"
                          : out.size() >= 4 && out.compare(out.size() - 4, 4, ".dat") == 0;
  const std::string text = read_text_file(a.str("data"));
  if (text.empty()) fail(a.str("data"), ": empty text");
  LoadedModel m = load_model(a);
  const bool bos = m.tokenizer.add_bos_default() && m.tokenizer.bos_id() >= 0;
  const std::vector<int32_t> tokens = m.tokenizer.encode(text, bos);

  ImatrixOptions opt;
  opt.n_ctx = a.integer("ctx");
  opt.max_chunks = a.integer("chunks") > 0 ? a.integer("chunks") : -1;
  opt.process_output = a.flag("process-output");
  opt.perplexity = !a.flag("no-ppl");
  opt.bos_id = bos ? m.tokenizer.bos_id() : -1;
  opt.dataset = a.str("data");
  const int64_t whole = int64_t(tokens.size()) / std::max<int64_t>(opt.n_ctx, 1);
  const int64_t total = opt.max_chunks > 0 ? std::min(whole, opt.max_chunks) : whole;
  std::printf("imatrix: %zu tokens, %lld chunks of %lld\n", tokens.size(), (long long)total,
              (long long)opt.n_ctx);
  Progress progress("imatrix", total, "chunks");
  opt.on_chunk = [&](int64_t done, int64_t, double ppl) {
    if (ppl > 0) progress.set_note("ppl " + std::to_string(ppl));
    progress.update(done);
  };
  ImatrixResult r = compute_imatrix(*m.model, tokens, opt);
  progress.finish();
  write_imatrix(out, r.data, legacy);
  if (opt.perplexity)
    std::printf("Final estimate: PPL = %.4f +/- %.5f\n", r.perplexity, r.perplexity_error);
  std::printf("wrote %s (%s): %zu matrices, %lld chunks of %lld tokens\n", out.c_str(),
              legacy ? "legacy dat" : "gguf", r.data.entries.size(), (long long)r.chunks,
              (long long)opt.n_ctx);
  return 0;
}

}  // namespace lamina
