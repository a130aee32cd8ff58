// lamina: one binary, one subcommand per file (cmd_*.cpp).
#include <cstdio>
#include <cstring>
#include <exception>

#include "commands.h"
#include "core/dist.h"
#include "core/error.h"
#include "core/interrupt.h"

namespace {

struct Command {
  const char* name;
  int (*run)(int, char**);
  const char* summary;
};

const Command kCommands[] = {
    {"init", lamina::cmd_init, "write a new randomly initialised HF model directory"},
    {"info", lamina::cmd_info, "architecture, parameter counts and memory of a model"},
    {"generate", lamina::cmd_generate, "continue a prompt (or answer it with --chat)"},
    {"chat", lamina::cmd_chat, "interactive multi-turn chat"},
    {"serve", lamina::cmd_serve,
     "an OpenAI-compatible HTTP server (continuous batching) with a web chat page"},
    {"score", lamina::cmd_score,
     "per-token log-probabilities, log-likelihood and perplexity of a text"},
    {"upscale", lamina::cmd_upscale,
     "depth up-scaling (SOLAR), mergekit passthrough recipes, LLaMA-Pro expansion"},
    {"sft", lamina::cmd_sft, "supervised fine-tuning and OpenChat's C-RLFT on conversations"},
    {"dpo", lamina::cmd_dpo, "preference optimisation: DPO, conservative DPO, robust, hinge, IPO"},
    {"data", lamina::cmd_data,
     "data binarize-ultrafeedback: preference pairs from rated completions"},
    {"eval", lamina::cmd_eval,
     "evaluate on tasks (lm-eval scoring), perplexity, sweeps; eval compare"},
    {"pretrain", lamina::cmd_pretrain,
     "continued pretraining on raw text (checkpoints, resume, metrics)"},
    {"plot", lamina::cmd_plot, "plot a metric of several training runs on one SVG"},
    {"merge-lora", lamina::cmd_merge_lora, "fold a PEFT LoRA adapter into the base weights"},
    {"recipe", lamina::cmd_recipe,
     "run a whole recipe from YAML: upscale, pretrain, sft, dpo, eval, export-gguf"},
    {"bench", lamina::cmd_bench,
     "prompt and decode tokens/s on this CPU (llama-bench's pp / tg), kernels, peak memory"},
    {"export-gguf", lamina::cmd_export_gguf,
     "one GGUF file for llama.cpp (f16, q8_0, q4_k_m, ...)"},
    {"imatrix", lamina::cmd_imatrix,
     "llama.cpp's importance matrix on a calibration text (for export-gguf --imatrix)"},
    {"tokenizer", lamina::cmd_tokenizer, "tokenizer train: a SentencePiece tokenizer for a corpus"},
    {"tokenize", lamina::cmd_tokenize,
     "a text through a model's tokenizer: ids, pieces and the decoded text as JSON"},
    {"template", lamina::cmd_template,
     "the prompt a model's chat template renders for a conversation (apply_chat_template)"},
};

}  // namespace

int lamina::run_command(const std::string& name, int argc, char** argv) {
  for (auto& c : kCommands)
    if (name == c.name) return c.run(argc, argv);
  lamina::fail("unknown command '", name, "'");
}

namespace {

void usage() {
  std::printf("lamina %s: depth up-scaling, C-RLFT and DPO recipes on Hugging Face checkpoints\n\n",
              LAMINA_VERSION);
  std::printf(
      "usage: lamina COMMAND [options]   (lamina COMMAND --help for its options)\n\ncommands:\n");
  for (auto& c : kCommands) std::printf("  %-10s %s\n", c.name, c.summary);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h") ||
      !std::strcmp(argv[1], "help")) {
    usage();
    return argc < 2 ? 2 : 0;
  }
  if (!std::strcmp(argv[1], "--version")) {
    std::printf("lamina %s\n", LAMINA_VERSION);
    return 0;
  }
  for (auto& c : kCommands) {
    if (std::strcmp(argv[1], c.name) != 0) continue;
    lamina::dist::init(&argc, &argv);
    lamina::install_interrupt_handler();  // temporaries removed on SIGINT/SIGTERM
    // Under mpirun a failing rank stops them all (the others would wait in a reduction).
    auto failed = [&](const char* what) {
      std::fflush(stdout);
      std::fprintf(stderr, "lamina %s: error: %s\n", c.name, what);
      if (lamina::dist::world() > 1) lamina::dist::abort_all(1);
      lamina::dist::finalize();
      return 1;
    };
    try {
      const int rc = c.run(argc - 2, argv + 2);
      lamina::dist::finalize();
      return rc;
    } catch (const lamina::Error& e) {
      return failed(e.what());
    } catch (const std::bad_alloc&) {
      return failed("out of memory");
    } catch (const std::exception& e) {
      return failed(e.what());
    }
  }
  std::fprintf(stderr, "lamina: unknown command '%s' (see lamina --help)\n", argv[1]);
  return 2;
}
