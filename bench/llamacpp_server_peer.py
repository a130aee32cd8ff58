"""llama-cpp-python's OpenAI-compatible server, as `python -m llama_cpp.server` runs it, optionally
without llama.cpp's repacked / AMX weight buffers (--no-extra-bufts, removed before the server's
own arguments: its AMX path crashed on one VM). Run by bench/serve_compare.py."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from llamacpp_peer import disable_extra_bufts  # noqa: E402

if "--no-extra-bufts" in sys.argv:
    sys.argv.remove("--no-extra-bufts")
    disable_extra_bufts()

from llama_cpp.server.__main__ import main  # noqa: E402

main()
