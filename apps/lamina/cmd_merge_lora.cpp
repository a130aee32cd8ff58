// lamina merge-lora: fold a PEFT LoRA adapter into the base weights (W + alpha/r · B·A).
#include <cstdio>

#include "commands.h"
#include "core/error.h"
#include "train/lora.h"

namespace lamina {

int cmd_merge_lora(int argc, char** argv) {
  Args a("merge-lora",
         "Write base + adapter as a full HF model directory (PEFT adapter: adapter_config.json +\n"
         "adapter_model.safetensors).",
         {{"model", "DIR", "base model", kRequired},
          {"adapter", "DIR", "PEFT LoRA adapter directory", kRequired},
          {"out", "DIR", "output model directory", kRequired},
          {"dtype", "f32|bf16|f16", "output dtype (default: as the base)", ""},
          {"force", "", "replace an existing output directory", ""}});
  if (!a.parse(argc, argv)) return 0;
  std::optional<DType> dt;
  if (a.given("dtype")) dt = parse_dtype(a.str("dtype"), "--dtype");
  merge_lora(a.str("model"), a.str("adapter"), a.str("out"), a.flag("force"), dt);
  std::printf("wrote %s\n", a.str("out").c_str());
  return 0;
}

}  // namespace lamina
