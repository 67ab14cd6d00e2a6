"""Big teachers: teacher.device_map (accelerate's big-model loading) and teacher.quantization (bitsandbytes), as far
as a CPU allows: a device-mapped teacher gives the logits of a plainly loaded one; quantization without a GPU, and
device_map or quantization with the vLLM backend, are refused in one line."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from findistill.config import ConfigError, TeacherConfig, load_config
from findistill.errors import ModelError
from findistill.teachers import ClassifierTeacher, PromptedLMTeacher

TEXTS = ["$AAPL soars on strong earnings", "Tesla cut to sell at Credit Suisse", "Nomura files quarterly report"]


def test_device_mapped_teacher_gives_the_logits_of_one_loaded_plainly(tiny_llama_dir, tiny_bert_classifier_dir):
    for cls, folder, extra in ((PromptedLMTeacher, tiny_llama_dir, {}),
                               (ClassifierTeacher, tiny_bert_classifier_dir,
                                {"kind": "classifier", "label_map": {"Bearish": "negative", "Bullish": "positive",
                                                                     "Neutral": "neutral"}})):
        plain = cls(TeacherConfig(model=str(folder), dtype="float32", **extra))
        mapped = cls(TeacherConfig(model=str(folder), dtype="float32", device_map="auto", **extra))
        np.testing.assert_allclose(mapped.class_logits(TEXTS), plain.class_logits(TEXTS), atol=1e-5, rtol=0)
        assert mapped.fingerprint() == plain.fingerprint()  # where the layers sit changes no label: same cache


def test_a_teacher_spread_over_two_devices_gives_the_same_logits(tiny_llama_dir, tmp_path):
    """Without GPUs the second device is the disk: accelerate keeps the embeddings in RAM and offloads the layers,
    moving each to the CPU as its turn comes (the hooks a multi-GPU device_map uses too)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spread = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype="float32", device_map="sequential",
                                                  max_memory={"cpu": 120_000}, offload_folder=str(tmp_path))
    assert set(spread.hf_device_map.values()) == {"cpu", "disk"}, spread.hf_device_map
    teacher = PromptedLMTeacher(TeacherConfig(model=str(tiny_llama_dir)), model=spread,
                                tokenizer=AutoTokenizer.from_pretrained(tiny_llama_dir))
    assert teacher.device.type == "cpu"  # inputs go where the embeddings are
    plain = PromptedLMTeacher(TeacherConfig(model=str(tiny_llama_dir), dtype="float32"))
    np.testing.assert_allclose(teacher.class_logits(TEXTS), plain.class_logits(TEXTS), atol=1e-5, rtol=0)


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the refusal without a GPU")
def test_quantization_without_a_gpu_is_one_line(tiny_llama_dir):
    with pytest.raises(ModelError) as err:
        PromptedLMTeacher(TeacherConfig(model=str(tiny_llama_dir), quantization="4bit"))
    assert "needs a CUDA GPU" in str(err.value) and "\n" not in str(err.value)


def test_big_teacher_keys_are_checked(tmp_path):
    path = tmp_path / "c.yaml"
    for teacher, message in (({"device_map": "everywhere"}, "teacher.device_map: must be one of auto"),
                             ({"quantization": "3bit"}, "teacher.quantization: must be one of none"),
                             ({"backend": "vllm", "device_map": "auto"}, "vllm.tensor_parallel_size")):
        path.write_text(yaml.safe_dump({"teacher": teacher}))
        with pytest.raises(ConfigError, match=message):
            load_config(path)
