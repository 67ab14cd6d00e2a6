"""configs/accelerate/*.yaml parse with accelerate's own loader, and a student whose state dict was gathered from
sharded parameters (FSDP / ZeRO-3) is rebuilt and saved like the trained one. The gather itself
(``accelerator.get_state_dict`` on sharded parameters) needs GPUs: benchmarks/gpu_check.sh runs it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
from accelerate.commands.launch import launch_command_parser
from accelerate.utils import DistributedType
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from findistill.config import LoraSettings, StudentConfig
from findistill.models.student import build_student, save_student
from findistill.training.trainer import unsharded_copy

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "accelerate"
EXPECTED = {"ddp.yaml": DistributedType.MULTI_GPU, "fsdp.yaml": DistributedType.FSDP,
            "deepspeed_zero3.yaml": DistributedType.DEEPSPEED}


def test_every_accelerate_config_parses_and_is_headed_by_its_launch_command():
    assert sorted(p.name for p in CONFIGS.glob("*.yaml")) == sorted(EXPECTED)
    launch_args = {action.dest for action in launch_command_parser()._actions}
    for name, kind in EXPECTED.items():
        path = CONFIGS / name
        config = load_config_from_file(str(path))  # what `accelerate launch --config_file` reads
        assert isinstance(config, ClusterConfig) and config.distributed_type == kind, name
        head = [line for line in path.read_text().splitlines() if line.startswith("# accelerate launch")]
        assert head and f"--config_file configs/accelerate/{name}" in head[0] and "-m findistill run" in head[0]
        # accelerate launch copies these sections onto its own arguments without checking their names
        for key in config.fsdp_config:
            assert key in launch_args, f"{name}: fsdp_config.{key} is not an accelerate launch argument"
        for key in config.deepspeed_config:
            assert key in launch_args, f"{name}: deepspeed_config.{key} is not an accelerate launch argument"
    zero3 = load_config_from_file(str(CONFIGS / "deepspeed_zero3.yaml")).deepspeed_config
    assert zero3["zero_stage"] == 3 and zero3["zero3_save_16bit_model"] is True  # trainer.full_model needs it
    fsdp = load_config_from_file(str(CONFIGS / "fsdp.yaml")).fsdp_config
    assert fsdp["fsdp_state_dict_type"] == "FULL_STATE_DICT"


def _logits(folder: Path, texts: list[str]) -> torch.Tensor:
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    with torch.no_grad():
        return model(**tok(texts, return_tensors="pt", padding=True)).logits


@pytest.mark.parametrize("fixture,method", [("tiny_bloom_dir", "lora"), ("tiny_bert_dir", "full")])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])  # ZeRO-3 gathers 16-bit weights
def test_a_gathered_state_dict_saves_the_trained_student(request, tmp_path, fixture, method, dtype):
    cfg = StudentConfig(model=str(request.getfixturevalue(fixture)), method=method,
                        lora=LoraSettings(r=4, alpha=8, dropout=0.0), max_length=16)
    trained, tokenizer = build_student(cfg)
    torch.manual_seed(0)
    with torch.no_grad():  # "training": move every trainable weight, so initial weights would show
        for param in trained.parameters():
            if param.requires_grad:
                param.add_(torch.randn_like(param) * 0.5)
    state = {k: v.to(dtype) for k, v in trained.state_dict().items()}
    copy = unsharded_copy(trained, state)
    trained.load_state_dict(state)  # the reference holds the same (16-bit rounded) values
    assert type(copy) is type(trained)
    assert all(p.dtype == torch.float32 for p in copy.parameters())
    texts = ["$AAPL soars on strong earnings", "the bank files quarterly report", "Tesla misses estimates"]
    save_student(trained, tokenizer, tmp_path / "trained")
    save_student(copy, tokenizer, tmp_path / "gathered")
    torch.testing.assert_close(_logits(tmp_path / "gathered", texts), _logits(tmp_path / "trained", texts),
                               rtol=0, atol=1e-6)
    with pytest.raises(RuntimeError):  # a gather that lost a tensor is not saved
        unsharded_copy(trained, dict(list(state.items())[1:]))
