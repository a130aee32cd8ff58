"""llama-cpp-python's OpenAI-compatible server, as `python -m llama_cpp.server` runs it, optionally
without llama.cpp's repacked / AMX weight buffers (--no-extra-bufts, removed before the server's
own arguments: its AMX path crashed on one VM). Run by bench/serve_compare.py."""
import sys

from llama_cpp import llama_cpp

if "--no-extra-bufts" in sys.argv:
    sys.argv.remove("--no-extra-bufts")
    default = llama_cpp.llama_model_default_params

    def params():
        p = default()
        p.use_extra_bufts = False
        return p

    llama_cpp.llama_model_default_params = params

from llama_cpp.server.__main__ import main  # noqa: E402

main()
