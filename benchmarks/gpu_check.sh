#!/usr/bin/env bash
# bash benchmarks/gpu_check.sh        (from anywhere; uses .venv/bin/python, or $PYTHON)
#
# The checks that need a GPU (issue 11, item 2): `findistill run` on the tiny random models of tests/conftest.py
# under accelerate with configs/accelerate/ddp.yaml (2 processes with 2 or more GPUs, else 1) and fsdp.yaml (the
# same count). A case passes when the run exits 0 and the saved student (gathered through accelerate before LoRA is
# merged) loads with plain transformers and reproduces the pipeline's own evaluation logits (to 1e-3). Prints one
# PASS / FAIL line per case and exits 1 if any failed; without a CUDA GPU it prints "no GPU: skipped" and exits 0.
# DeepSpeed ZeRO-3 (configs/accelerate/deepspeed_zero3.yaml) is checked too when the deepspeed package is installed.
# With 2 processes the cases also exercise the rank-aware pipeline (findistill.distributed) over NCCL; on CPU it is
# tested with 2 gloo processes by tests/test_distributed.py.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3

ngpu=$("$PY" -c "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)" 2>/dev/null || echo 0)
if [ "${ngpu:-0}" -lt 1 ]; then
    echo "gpu_check: no GPU: skipped (nothing was run)"
    exit 0
fi
nproc=1
[ "$ngpu" -ge 2 ] && nproc=2
work=$(mktemp -d -t findistill-gpu-check.XXXXXX)
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"
echo "gpu_check: $ngpu GPU(s), $nproc process(es) per case, work folder $work"

# Tiny teacher (LLaMA) and student (BLOOM) folders, a TFNS-like data folder and a run config, as the tests build them.
"$PY" - "$work" <<'PYEOF' || { echo "gpu_check: FAIL setup"; exit 1; }
import sys
from pathlib import Path

import torch
import yaml
from transformers import BloomConfig, BloomForCausalLM, LlamaConfig, LlamaForCausalLM

sys.path.insert(0, "tests")
from conftest import _save, build_tokenizer, write_tfns_folder

work = Path(sys.argv[1])
write_tfns_folder(work / "tfns")
tok = build_tokenizer(work / "teacher", "causal")
torch.manual_seed(0)
_save(LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                   num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
                                   bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)), tok, work / "teacher")
tok = build_tokenizer(work / "student", "causal")
torch.manual_seed(1)
_save(BloomForCausalLM(BloomConfig(vocab_size=len(tok), hidden_size=16, n_layer=2, n_head=2,
                                   bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                   pad_token_id=tok.pad_token_id)), tok, work / "student")
config = {"name": "gpu-check", "data": {"dev_fraction": 0.2},
          "teacher": {"kind": "prompted_lm", "model": str(work / "teacher"), "batch_size": 8},
          "student": {"model": str(work / "student"), "method": "lora", "lora": {"r": 4, "alpha": 8},
                      "max_length": 24},
          "train": {"epochs": 2, "batch_size": 8, "learning_rate": 1e-3, "logging_steps": 2},
          "eval": {"bootstrap_samples": 200}}
(work / "tiny.yaml").write_text(yaml.safe_dump(config))
PYEOF

failed=0
run_case() {  # name, accelerate config
    local name=$1 config=$2 out="$work/$1"
    if ! "$PY" -m accelerate.commands.launch --config_file "$config" --num_processes "$nproc" \
            -m findistill run "$work/tiny.yaml" --out "$out" --data-dir "$work/tfns" >"$work/$name.log" 2>&1; then
        echo "gpu_check: FAIL $name (findistill run exited non-zero; last lines of $work/$name.log:)"
        tail -n 15 "$work/$name.log" | sed 's/^/    /'
        failed=1
        return
    fi
    if "$PY" - "$out" "$work/tfns/sent_valid.csv" >>"$work/$name.log" 2>&1 <<'PYEOF'
import csv, sys
import numpy as np, torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
out, valid = sys.argv[1], sys.argv[2]
texts = [row["text"] for row in csv.DictReader(open(valid, encoding="utf-8"))]
tok = AutoTokenizer.from_pretrained(f"{out}/student")
model = AutoModelForSequenceClassification.from_pretrained(f"{out}/student").eval()
with torch.no_grad():
    enc = tok(texts, return_tensors="pt", padding=True, truncation=True, max_length=24)
    got = model(**enc).logits.numpy()
want = np.load(f"{out}/predictions/student_distilled.npz")["logits"]
assert got.shape == want.shape, (got.shape, want.shape)
np.testing.assert_allclose(got, want, rtol=0, atol=1e-3)
PYEOF
    then
        echo "gpu_check: PASS $name"
    else
        echo "gpu_check: FAIL $name (the saved student does not reproduce the run's evaluation; see $work/$name.log)"
        failed=1
    fi
}

run_case ddp configs/accelerate/ddp.yaml
run_case fsdp configs/accelerate/fsdp.yaml
if "$PY" -c "import deepspeed" 2>/dev/null; then
    run_case deepspeed_zero3 configs/accelerate/deepspeed_zero3.yaml
else
    echo "gpu_check: SKIP deepspeed_zero3 (the deepspeed package is not installed)"
fi
exit $failed
