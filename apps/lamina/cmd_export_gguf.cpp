// lamina export-gguf: a HF model directory -> one GGUF file for llama.cpp (f32, f16, bf16, q8_0,
// q4_0), as convert_hf_to_gguf.py --outtype and llama-quantize would write it.
#include <cstdio>
#include <filesystem>

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
      "stay F32; matrices take --outtype (q8_0, q4_0: ggml's reference quantizers, byte-identical\n"
      "to llama.cpp's). Streamed a matrix at a time.",
      {{"model", "DIR", "Hugging Face model directory", kRequired},
       {"out", "FILE", "output .gguf file", kRequired},
       {"outtype", "TYPE", "f32, f16, bf16, q8_0 or q4_0", "f16"},
       {"force", "", "replace an existing output file", ""}});
  if (!a.parse(argc, argv)) return 0;
  GgmlType t;
  try {
    t = parse_ggml_type(a.str("outtype"));
  } catch (const Error& e) {
    fail("--outtype: ", e.what());
  }
  if (std::filesystem::exists(a.str("out")) && !a.flag("force"))
    fail(a.str("out"), ": exists (pass --force to replace it)");
  GgufExportResult r = export_gguf(a.str("model"), a.str("out"), t);
  std::printf("wrote %s: %lld tensors, %s (%s)\n", a.str("out").c_str(), (long long)r.tensors,
              format_bytes(double(r.bytes)).c_str(), ggml_type_name(t));
  if (r.fallback_f16)
    std::printf("  %lld matrices kept in f16: their rows are not a multiple of the block size\n",
                (long long)r.fallback_f16);
  if (r.sliding_window)
    std::printf(
        "  note: the sliding window (%lld tokens) is not stored: llama.cpp's llama architecture "
        "attends to the whole context, so outputs match up to %lld tokens\n",
        (long long)r.sliding_window, (long long)r.sliding_window);
  return 0;
}

}  // namespace lamina
