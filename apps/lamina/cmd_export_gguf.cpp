// lamina export-gguf: a HF model directory -> one GGUF file for llama.cpp, as
// convert_hf_to_gguf.py --outtype (f32, f16, bf16, q8_0) or llama-quantize (q4_0 --pure, and the
// k-quant mixes: q4_k_m and the rest) would write it.
#include <cstdio>
#include <filesystem>
#include <optional>

#include "commands.h"
#include "core/error.h"
#include "core/progress.h"
#include "model/gguf_export.h"

namespace lamina {

int cmd_export_gguf(int argc, char** argv) {
  Args a(
      "export-gguf",
      "Write a Llama, Mistral, Mixtral, Qwen2 or Qwen3 model directory as one GGUF file that\n"
      "llama.cpp loads: its tensor names, Q/K permuted for ggml's RoPE (llama; qwen2 and qwen3\n"
      "are NEOX), the vocabulary with scores and types, the chat template. Norms and the router\n"
      "stay F32. --outtype f32, f16, bf16 and q8_0 give every matrix that type, as\n"
      "convert_hf_to_gguf.py does; q4_0 is llama-quantize's --pure Q4_0; q2_k, q3_k_s, q3_k_m,\n"
      "q3_k_l, q4_k_s, q4_k_m, q5_k_s, q5_k_m and q6_k are llama-quantize's mixes (the output\n"
      "matrix Q6_K, more bits for some attn_v / ffn_down layers, ...). Blocks come from ggml's "
      "own\n"
      "quantizers, byte-identical to llama-quantize run on the f32 export. Streamed a matrix at\n"
      "a time.",
      {{"model", "DIR", "Hugging Face model directory", kRequired},
       {"out", "FILE", "output .gguf file", kRequired},
       {"outtype", "TYPE", quant_mix_names(), "f16"},
       {"imatrix", "FILE",
        "importance matrix (lamina imatrix or llama-imatrix; GGUF or .dat) the q4_0 and k-quant "
        "blocks are fitted with, as llama-quantize --imatrix",
        ""},
       {"force", "", "replace an existing output file", ""}});
  if (!a.parse(argc, argv)) return 0;
  const QuantMix& mix = parse_quant_mix(a.str("outtype"));
  if (std::filesystem::exists(a.str("out")) && !a.flag("force"))
    fail(a.str("out"), ": exists (pass --force to replace it)");
  std::optional<ExportImportance> imatrix;
  if (a.given("imatrix")) imatrix = read_export_importance(a.str("imatrix"));
  GgufExportResult r =
      export_gguf(a.str("model"), a.str("out"), mix, imatrix ? &*imatrix : nullptr);
  std::string types;
  for (auto& [name, count] : r.matrices_by_type)
    types += (types.empty() ? "" : ", ") + std::to_string(count) + " " + name;
  std::printf("wrote %s: %lld tensors, %s (%s: matrices %s)\n", a.str("out").c_str(),
              (long long)r.tensors, format_bytes(double(r.bytes)).c_str(), mix.name, types.c_str());
  if (imatrix)
    std::printf("  importance matrix: %s (%zu entries, %lld chunks)\n", a.str("imatrix").c_str(),
                imatrix->rows.size(), (long long)imatrix->chunks);
  if (r.fallbacks)
    std::printf("  %lld matrices took a fallback type: their rows are not whole %s blocks\n",
                (long long)r.fallbacks, ggml_type_name(mix.base));
  if (r.sliding_window)
    std::printf(
        "  note: the sliding window (%lld tokens) is not stored: llama.cpp's llama architecture "
        "attends to the whole context, so outputs match up to %lld tokens\n",
        (long long)r.sliding_window, (long long)r.sliding_window);
  return 0;
}

}  // namespace lamina
