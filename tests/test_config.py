"""Config parsing: every shipped YAML loads; bad keys, types and ranges are one-line errors naming the key."""

from pathlib import Path

import pytest

from findistill.config import ConfigError, RunConfig, dump_config, from_dict, load_config

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted(ROOT.glob("configs/*.yaml")) + sorted(ROOT.glob("benchmarks/configs/*.yaml"))


def test_configs_folder_is_not_empty():
    assert CONFIGS, "configs/*.yaml should exist"


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_shipped_config_loads_and_starts_with_its_command(path):
    config = load_config(path)
    assert isinstance(config, RunConfig)
    first = path.read_text().splitlines()[0]
    assert first.startswith(("# findistill ", "# python ")) and path.name in first, \
        "a config starts with the command that runs it"
    # The resolved config round-trips through YAML.
    assert from_dict(RunConfig, __import__("yaml").safe_load(dump_config(config))) == config


def test_paper_config_matches_the_reference_study():
    config = load_config(Path(__file__).resolve().parents[1] / "configs" / "paper.yaml")
    assert config.teacher.model == "Orkhan/llama-2-7b-absa"
    assert config.student.model == "bigscience/bloom-1b1"
    assert (config.student.lora.r, config.train.temperature, config.train.alpha) == (16, 2.0, 0.5)
    assert (config.train.batch_size, config.train.epochs, config.train.learning_rate) == (2, 2.0, 5e-5)
    assert (config.student.max_length, config.train.precision) == (32, "bf16")


@pytest.mark.parametrize("data, key", [
    ({"trian": {}}, "trian"),
    ({"train": {"epoch": 2}}, "train.epoch"),
    ({"teacher": {"finetune": {"lora": {"rank": 8}}}}, "teacher.finetune.lora.rank"),
])
def test_unknown_key_is_named(data, key):
    with pytest.raises(ConfigError) as err:
        from_dict(RunConfig, data)
    assert err.value.key == key
    assert "\n" not in str(err.value) and str(err.value).startswith(key + ": unknown key")


@pytest.mark.parametrize("data, key", [
    ({"train": {"batch_size": "two"}}, "train.batch_size"),
    ({"train": {"batch_size": 2.5}}, "train.batch_size"),
    ({"evaluate_teacher": "yes"}, "evaluate_teacher"),
    ({"teacher": {"kind": "oracle"}}, "teacher.kind"),
    ({"data": {"transfer_files": "a.txt"}}, "data.transfer_files"),
])
def test_wrong_type_is_named(data, key):
    with pytest.raises(ConfigError) as err:
        from_dict(RunConfig, data)
    assert err.value.key == key


@pytest.mark.parametrize("data, key", [
    ({"train": {"alpha": 1.5}}, "train.alpha"),
    ({"train": {"temperature": 0}}, "train.temperature"),
    ({"data": {"dev_fraction": 0.9}}, "data.dev_fraction"),
    ({"student": {"lora": {"r": 0}}}, "student.lora.r"),
    ({"teacher": {"prompt": "no placeholder"}}, "teacher.prompt"),
    ({"teacher": {"verbalizer": {"negative": ["down"], "positive": ["up"]}}}, "teacher.verbalizer"),
    ({"data": {"label_map": {"0": "bearish"}}}, "data.label_map.0"),
    ({"teacher": {"kind": "ensemble", "members": [{"batch_size": 0}]}}, "teacher.members[0].batch_size"),
])
def test_out_of_range_is_named(data, key):
    with pytest.raises(ConfigError) as err:
        from_dict(RunConfig, data)
    assert err.value.key == key


def test_yaml_exponent_without_dot_is_a_float(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  learning_rate: 5e-5\n")  # YAML 1.1 reads this as a string
    assert load_config(path).train.learning_rate == pytest.approx(5e-5)


def test_overrides_and_missing_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: x\n")
    assert load_config(path, {"train.epochs": 1, "student.lora.r": 4}).student.lora.r == 4
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("train: [\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(tmp_path / "bad.yaml")


def test_every_field_has_help():
    import dataclasses

    def missing(cls, prefix=""):
        for f in dataclasses.fields(cls):
            hint = __import__("typing").get_type_hints(cls)[f.name]
            if dataclasses.is_dataclass(hint):
                yield from missing(hint, f"{prefix}{f.name}.")
            elif not f.metadata.get("help"):
                yield f"{prefix}{f.name}"

    assert list(missing(RunConfig)) == []


def test_label_smoothing_is_checked_and_the_trainers_own_is_refused():
    from findistill.config import ConfigError, TrainConfig

    with pytest.raises(ConfigError, match="label_smoothing"):
        TrainConfig(label_smoothing=1.0)
    with pytest.raises(ConfigError, match="train.label_smoothing"):  # the Trainer's would be silently ignored
        TrainConfig(trainer_kwargs={"label_smoothing_factor": 0.1})


def test_a_smoothed_student_has_new_keys_and_an_unsmoothed_one_keeps_its_old_keys():
    from findistill.config import RunConfig, TrainConfig
    from findistill.pipeline.stages import stage_key

    data = {"train": "t", "dev": "d", "eval": "e", "transfer": None}
    plain, smoothed = RunConfig(), RunConfig(train=TrainConfig(label_smoothing=0.1))
    for stage in ("student_ce", "student_distilled"):
        assert stage_key(plain, data, stage) != stage_key(smoothed, data, stage)
    assert stage_key(plain, data, "label") == stage_key(smoothed, data, "label")
