"""Config files, overrides and assembly errors: each names the key path, the value,
the component and its plugin, and the valid choices, before anything is allocated."""

import json

import jax
import pytest
import yaml
from conftest import ROOT, run_cli

from fusionjax.assembly import assemble
from fusionjax.config import apply_overrides, load_config, parse_override
from fusionjax.errors import ConfigError

EXAMPLE = ROOT / "examples" / "three_modality.toml"


def config_error(cfg, *overrides) -> str:
    with pytest.raises(ConfigError) as e:
        assemble(apply_overrides(cfg, list(overrides)))
    return str(e.value)


def test_toml_yaml_json_load_the_same(tmp_path, tiny_config):
    base = load_config(EXAMPLE)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(base))
    (tmp_path / "c.json").write_text(json.dumps(base))
    assert load_config(tmp_path / "c.yaml") == base
    assert load_config(tmp_path / "c.json") == base


def test_override_values_are_typed():
    assert parse_override("train.steps=3") == (["train", "steps"], 3)
    assert parse_override("a.lr=1e-3") == (["a", "lr"], 1e-3)
    assert parse_override("a.b=[32, 64]") == (["a", "b"], [32, 64])
    assert parse_override("a.flag=true") == (["a", "flag"], True)
    assert parse_override("model.fusion.type=sum") == (["model", "fusion", "type"], "sum")
    assert parse_override('a.s="1"') == (["a", "s"], "1")
    with pytest.raises(ConfigError, match="key.path=value"):
        parse_override("train.steps")


def test_bad_files_name_the_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[model\n")
    with pytest.raises(ConfigError, match="bad.toml.*not valid TOML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="unknown extension"):
        load_config(tmp_path / "c.ini")
    unsafe = tmp_path / "unsafe.yaml"
    unsafe.write_text("model: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(unsafe)


def test_valid_config_assembles_without_allocating(tiny_config):
    before = len(jax.live_arrays())
    a = assemble(tiny_config)
    counts = a.param_counts()
    assert len(jax.live_arrays()) == before  # eval_shape only: no parameter exists yet
    assert set(counts) == {"model.encoders.image", "model.encoders.text", "model.encoders.audio",
                           "model.fusion", "model.head"}
    assert counts["model.fusion"] == 0 and counts["model.head"] > 0
    resolved = a.resolved_config()
    assert resolved["model"]["encoders"]["text"]["type"] == "encoders/lstm_text"
    assert resolved["model"]["encoders"]["text"]["vocab_size"] == 100  # from the data set
    assert resolved["model"]["head"]["num_classes"] == 4
    assert "input_shape" not in resolved["model"]["encoders"]["image"]


def test_unknown_key_names_path_component_plugin_and_suggestion(tiny_config):
    msg = config_error(tiny_config, "model.encoders.audio.n_mel=40")
    assert msg.startswith("model.encoders.audio.n_mel: unknown parameter 'n_mel'")
    assert "did you mean 'n_mels'" in msg
    assert "encoders/spectrogram_audio" in msg and "package fusionjax" in msg
    assert "n_mels: int = 64" in msg  # the valid parameters, with types and defaults


def test_wrong_type(tiny_config):
    msg = config_error(tiny_config, "model.encoders.text.hidden=abc")
    assert msg.startswith("model.encoders.text.hidden: expected int, got 'abc' (str)")
    msg = config_error(tiny_config, "model.encoders.image.readout=flaten")
    assert "model.encoders.image.readout" in msg and "'flatten'" in msg
    msg = config_error(tiny_config, "train.steps=1.5")
    assert msg.startswith("train.steps: expected int")


def test_shard_params_is_a_bool(tiny_config):
    for value in ('"yes"', "1"):
        with pytest.raises(ConfigError) as e:
            assemble(apply_overrides(tiny_config, [f"train.shard_params={value}"]))
        assert e.value.key == "train.shard_params"
        assert str(e.value).startswith("train.shard_params: expected bool")
    a = assemble(apply_overrides(tiny_config, ["train.shard_params=true"]))
    assert a.train.shard_params is True and a.resolved_config()["train"]["shard_params"] is True
    assert assemble(tiny_config).resolved_config()["train"]["shard_params"] is False


def test_unknown_component_and_section(tiny_config):
    msg = config_error(tiny_config, "model.fusion.type=concta")
    assert msg.startswith("model.fusion.type: unknown fusion 'concta'")
    assert "did you mean 'concat'" in msg and "sum" in msg
    msg = config_error(tiny_config, "trian.steps=3")
    assert msg.startswith("trian: unknown section (did you mean 'train'?)")
    msg = config_error(tiny_config, "model.encoders.speech.type=spectrogram_audio")
    assert "model.encoders.speech: data set 'datasets/synthetic' has no modality 'speech'" in msg


def test_missing_required_and_injected(tiny_config):
    del tiny_config["data"]  # no data set -> no vocab_size default either
    with pytest.raises(ConfigError, match=r"^data: missing section \[data\]"):
        assemble(tiny_config)


def test_injected_parameter_cannot_be_set(tiny_config):
    msg = config_error(tiny_config, "model.fusion.in_features=3")
    assert msg.startswith("model.fusion.in_features: is set by fusionjax")


def test_width_mismatch(tiny_config):
    tiny_config["model"]["encoders"]["text"]["hidden"] = 16  # 32, 16, 32
    msg = config_error(tiny_config, "model.fusion.type=sum")
    assert msg.startswith("model.fusion.features: sum needs equal encoder widths")
    assert "model.encoders.text: 16" in msg and "model.fusion.features=D" in msg
    assemble(apply_overrides(tiny_config, ["model.fusion.type=sum", "model.fusion.features=24"]))


def test_contradicting_the_data_set(tiny_config):
    msg = config_error(tiny_config, "model.encoders.audio.sample_rate=16000")
    assert msg.startswith("model.encoders.audio.sample_rate: is 16000, but the audio "
                          "sample_rate of data set 'datasets/synthetic' is 8000")
    msg = config_error(tiny_config, "model.head.num_classes=7")
    assert "model.head.num_classes: is 7" in msg


def test_component_value_errors_carry_the_key(tiny_config):
    msg = config_error(tiny_config, "model.encoders.image.pool_layers=5")
    assert msg.startswith("model.encoders.image.pool_layers: must be in 0..2")
    msg = config_error(tiny_config, "model.encoders.image.channels=[8,8,8,8,8]")
    assert msg.startswith("model.encoders.image.pool_layers:")  # 16x16 pooled 5 times
    msg = config_error(tiny_config, "model.encoders.audio.fmax=9000.0")
    assert msg.startswith("model.encoders.audio.fmax: need 0 <= fmin < fmax")
    msg = config_error(tiny_config, "train.optimizer.name=adamm")
    assert "did you mean 'adam'" in msg
    msg = config_error(tiny_config, "train.optimizer.learning_rat=0.1")
    assert msg.startswith("train.optimizer.learning_rat: unknown parameter")


def test_cli_config_check_exit_codes(tmp_path):
    ok = run_cli("config", "check", str(EXAMPLE))
    assert ok.returncode == 0, ok.stderr
    assert "model.encoders.audio" in ok.stdout and "params" in ok.stdout
    bad = run_cli("config", "check", str(EXAMPLE), "model.encoders.audio.n_mel=40")
    assert bad.returncode == 2
    assert "Traceback" not in bad.stderr
    assert "model.encoders.audio.n_mel" in bad.stderr and "did you mean 'n_mels'" in bad.stderr
    usage = run_cli("config", "check")
    assert usage.returncode == 2


def test_checks_that_need_the_data_set_happen_at_assembly(tiny_config):
    msg = config_error(tiny_config, "train.batch_size=100000")
    assert msg.startswith("train.batch_size: 100000 is larger than the 512 training examples")
    msg = config_error(tiny_config, "train.eval_split=tset")
    assert msg.startswith("train.eval_split: data set 'datasets/synthetic' has no split 'tset' "
                          "(did you mean 'test'?)")
    assert "its splits are: train, test" in msg


def test_optimizer_arguments_are_type_checked(tiny_config):
    msg = config_error(tiny_config, 'train.optimizer={name="adamw", learning_rate="abc"}')
    assert msg.startswith("train.optimizer.learning_rate: expected float")


def test_resolved_config_is_complete(tiny_config):
    resolved = assemble(apply_overrides(tiny_config, ["train.optimizer.learning_rate=3e-4"])
                        ).resolved_config()
    assert resolved["model"]["encoders"]["image"]["kernel_size"] == 3  # a constructor default
    assert resolved["train"]["optimizer"]["name"] == "adam"  # the default optimiser, named
    assert resolved["train"]["optimizer"]["learning_rate"] == 3e-4
    assert assemble(resolved).resolved_config() == resolved  # a fixed point
