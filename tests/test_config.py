"""Config files, overrides and assembly errors: each names the key path, the value,
the component and its plugin, and the valid choices, before anything is allocated."""

import gc
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
    gc.collect()  # earlier tests' garbage, collected now rather than during assemble
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


# ---------------------------------------------------------------- hostile configs

def test_non_string_keys_are_refused_where_the_config_is_read(tmp_path, tiny_config):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  encoders:\n    1: {type: cnn_image}\n  head: {type: classification}\n"
                    "data: {type: synthetic}\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(e.value).startswith("model.encoders: key 1 (int) is not a string (in config file ")
    assert e.value.key == "model.encoders" and 'quote it: "1"' in e.value.hint
    for key, spelled in ((True, "true"), (None, "null"), (2.5, "2.5")):
        with pytest.raises(ConfigError, match=rf"^data: key {spelled} \(\w+\) is not a string"):
            apply_overrides({**tiny_config, "data": {**tiny_config["data"], key: 20}}, [])
    tiny_config["model"]["encoders"]["image"][5] = 1  # a Python dict given to assemble itself
    with pytest.raises(ConfigError, match=r"^model.encoders.image: key 5 \(int\) is not a string"):
        assemble(tiny_config)


def test_did_you_mean_takes_anything():
    from fusionjax.errors import did_you_mean

    assert did_you_mean(1, ["a"]) == did_you_mean(None, []) == did_you_mean("x" * 10**6, ["x"]) == ""
    assert did_you_mean("trian", ["train", 1, None]) == " (did you mean 'train'?)"


def test_messages_are_bounded():
    from fusionjax.errors import MAX_MESSAGE, shown

    laughs = ["lol"] * 9
    for _ in range(9):
        laughs = [laughs] * 9  # 9**10 strings, shared
    selfish = []
    selfish.append(selfish)
    for value in ("x" * 5_000_000, laughs, selfish, 10**5000, {i: i for i in range(10**5)}):
        assert len(shown(value)) <= 200
    assert shown("x" * 1000).startswith("'xxx") and "..." in shown("x" * 1000)
    assert shown(10**5000) == "<an int of 5001 digits>" and shown([1, "a"]) == "[1, 'a']"
    e = ConfigError("y" * 10**6, key="a.b", hint="the hint")
    assert len(str(e)) <= MAX_MESSAGE and str(e).startswith("a.b: yyy") and str(e).endswith("the hint")
    assert len(str(e.under("model"))) <= MAX_MESSAGE


def test_yaml_aliases_are_bounded(tmp_path):
    import time

    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\n")  # 9**9 strings from well under 1 kB
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=r"bomb.yaml': its YAML aliases expand it to more than 100,000"):
        load_config(bomb)
    assert time.perf_counter() - start < 0.5
    loop = tmp_path / "loop.yaml"
    loop.write_text("model:\n  encoders: &e\n    x: [*e]\n")
    with pytest.raises(ConfigError, match=r"loop.yaml': the YAML value at line 2 holds an alias of itself"):
        load_config(loop)
    reuse = tmp_path / "reuse.yaml"  # ordinary anchors still work
    reuse.write_text("a: &c {x: 1}\nb: *c\nc: {<<: *c, y: 2}\n")
    assert load_config(reuse) == {"a": {"x": 1}, "b": {"x": 1}, "c": {"x": 1, "y": 2}}


def test_size_and_depth_limits(tmp_path):
    big = tmp_path / "big.toml"
    big.write_text('a = "' + "x" * (2 * 2**20) + '"\n')
    with pytest.raises(ConfigError, match=r"big.toml' is larger than 2 MB"):
        load_config(big)
    wide = tmp_path / "wide.json"
    wide.write_text('{"a": [' + ",".join(["0"] * 100_001) + "]}")
    with pytest.raises(ConfigError, match=r"^a: holds more than 100,000 values"):
        load_config(wide)
    for text, match in (('{"a": ' + "[" * 40 + "]" * 40 + "}", r"^a\[0\]\S*: nests deeper than 32 levels"),
                        ('{"a": ' + "[" * 5000 + "]" * 5000 + "}", r"nests tables and lists too deeply")):
        deep = tmp_path / "deep.json"
        deep.write_text(text)
        with pytest.raises(ConfigError, match=match):
            load_config(deep)
    with pytest.raises(ConfigError, match=r"^data: key 'kkk\S* is 300 characters long, more than 256"):
        apply_overrides({"data": {"k" * 300: 1}}, [])


def test_values_must_be_usable_where_they_are_bound():
    import math

    from fusionjax.config.validation import bind

    def component(rate: float = 0.1, sizes: tuple[int, ...] = (1,), cap: float = math.inf,
                  table: dict | None = None):
        pass

    def error(**section) -> str:
        with pytest.raises(ConfigError) as e:
            bind(component, section, "model.head", owner="head h")
        return str(e.value)

    assert error(rate=math.inf).startswith("model.head.rate: must be a finite number, got inf (head h)")
    assert error(rate=math.nan).startswith("model.head.rate: must be a finite number, got nan")
    assert error(table={"a": [1.0, -math.inf]}).startswith("model.head.table.a[1]: must be a finite")
    assert error(sizes=[1, 2**63]).startswith("model.head.sizes[1]: 9223372036854775808 is outside the "
                                              "int64 range")
    assert error(rate=10**400).startswith("model.head.rate: <an int of 401 digits> is outside")
    assert bind(component, {"cap": math.inf, "sizes": [2**63 - 1]}, "k", owner="o")["cap"] == math.inf


def test_non_finite_and_huge_values_in_the_optimizer(tiny_config):
    for override, expected in (
        ("train.optimizer.learning_rate=inf", "train.optimizer.learning_rate: must be a finite number"),
        ("train.optimizer.learning_rate=-inf", "train.optimizer.learning_rate: must be a finite number"),
        ("train.optimizer.learning_rate=nan", "train.optimizer.learning_rate: must be a finite number"),
        ("train.optimizer.clip_norm=inf", "train.optimizer.clip_norm: must be a finite number, got inf"),
        ("train.steps=9223372036854775808", "train.steps: 9223372036854775808 is outside the int64 range"),
    ):
        assert config_error(tiny_config, override).startswith(expected)
    from fusionjax.training.optim import make_optimizer

    with pytest.raises(ConfigError, match=r"clip_norm: must be a finite number > 0, got inf"):
        make_optimizer({"clip_norm": float("inf")}, steps=10)
    with pytest.raises(ConfigError, match=r"learning_rate: must be a finite number, got inf \(optax.adam\)"):
        make_optimizer({"name": "adam", "learning_rate": float("inf")}, steps=10)


def test_overrides_may_follow_an_option(tmp_path, capsys):
    """`fusionjax config check CONFIG --json key=value` takes the override (argparse alone
    stops at the option), in order with those before it; anything else is refused."""
    import json

    from fusionjax.cli import main

    config = str(ROOT / "examples" / "avdigits.toml")
    assert main(["config", "check", config, "train.steps=5", "--json", "train.steps=7",
                 "train.batch_size=16"]) == 0
    resolved = json.loads(capsys.readouterr().out)
    assert resolved["train"]["steps"] == 7 and resolved["train"]["batch_size"] == 16
    with pytest.raises(SystemExit):
        main(["config", "check", config, "--json", "stray"])
    assert "unrecognized arguments: stray" in capsys.readouterr().err
