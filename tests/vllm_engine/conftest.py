"""tests/vllm_engine runs only under `make test-vllm` (FINDISTILL_VLLM_TESTS=1, in .venv-vllm): the normal suite never
collects these files, so it never imports vllm."""

import importlib.util
import os

if os.environ.get("FINDISTILL_VLLM_TESTS") != "1" or importlib.util.find_spec("vllm") is None:
    collect_ignore_glob = ["test_*.py"]
