"""Config options: allowed values declared in the MethodSpec, checked before any run starts."""

from __future__ import annotations

import re

import pytest

from osrbench import cli, config, plugins
from osrbench.config import ENGINE_DEFAULTS, ENGINE_OPTIONS, ConfigError, resolve
from osrbench.datasets import DatasetSpec
from osrbench.method import Method, MethodSpec, Option
from osrbench.testing import ConformanceError, run_check

DIGITS = DatasetSpec(name="digits", load=lambda *a: None, table="mnist", num_classes=10, image_size=32,
                     augment="crop_flip")


class Stub(Method):
    """Never trained here: only the spec matters."""

    def setup(self, ctx):
        pass

    def train_step(self, phase, images, labels):
        return {}

    def predict(self, images):
        raise NotImplementedError

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


def _spec(defaults=None, options=None, recipes=None, default_recipe=None, name="mine") -> MethodSpec:
    return MethodSpec(name, Stub, defaults={"score": "msp", "lr": 0.1, "betas": [0.9, 0.999], "hint": None,
                                            **(defaults or {})},
                      options={"score": Option(choices=("msp", "mls"), help="test score"),
                               "lr": Option(exclusive_minimum=0), "betas": Option(minimum=0, exclusive_maximum=1),
                               "hint": Option(choices=("a", "b")), **(options or {})},
                      recipes=recipes or {}, default_recipe=default_recipe)


def _bad(spec, overrides=None, recipe=None, epochs=None) -> str:
    with pytest.raises(ConfigError) as info:
        resolve(spec, DIGITS, recipe, epochs, overrides)
    message = str(info.value)
    assert "\n" not in message
    return message


# ------------------------------------------------------------------------------------ Option


@pytest.mark.parametrize(
    ("option", "text", "good", "bad"),
    [
        (Option(choices=("msp", "mls")), "msp, mls", ["msp", "mls"], ["mxp", "", None, 1]),
        (Option(minimum=1), ">= 1", [1, 7, 1.5], [0, -3, "1", True, None]),
        (Option(exclusive_minimum=0), "> 0", [1e-9, 3], [0, 0.0, -1e-9]),
        (Option(maximum=2), "<= 2", [2, -5], [2.5]),
        (Option(exclusive_maximum=1), "< 1", [0.999], [1, 1.0]),
        (Option(minimum=0, maximum=30), "in [0, 30]", [0, 30, 6], [-1, 31]),
        (Option(minimum=0, exclusive_maximum=1), "in [0, 1)", [0, [0.5, 0.999], []], [1, [0.5, 1.0], [-0.1]]),
        (Option(exclusive_minimum=0, maximum=1), "in (0, 1]", [1], [0]),
        (Option(help="just a help line"), "", ["anything", 3, None, [1]], []),
    ],
)
def test_option_allowed_text_and_violation(option, text, good, bad):
    assert option.allowed() == text
    for value in good:
        assert option.violation(value) is None, value
    for value in bad:
        assert option.violation(value) is not None, value


def test_option_is_frozen_and_keeps_choices_as_a_tuple():
    opt = Option(choices=["sgd", "adam"])
    assert opt.choices == ("sgd", "adam")
    with pytest.raises(AttributeError):
        opt.minimum = 3  # type: ignore[misc]
    assert MethodSpec("x", Stub).options == {}


# ------------------------------------------------------------------------- resolve: engine keys


def test_every_engine_key_has_an_option_and_the_engine_defaults_satisfy_them():
    assert set(ENGINE_OPTIONS) == set(ENGINE_DEFAULTS)
    for key, option in ENGINE_OPTIONS.items():
        assert option.violation(ENGINE_DEFAULTS[key]) is None, key
        assert option.help, key


@pytest.mark.parametrize(
    ("overrides", "expect"),
    [
        ({"augment": "crop"}, r"'augment': 'crop' is not allowed \(valid: dataset, none, crop_flip\); did you mean 'crop_flip'\?"),
        ({"normalize": "cifar10"}, r"'normalize': 'cifar10' is not allowed \(valid: none, cifar, imagenet\); did you mean 'cifar'\?"),
        ({"precision": "bf61"}, r"'precision': 'bf61' is not allowed \(valid: fp32, bf16\); did you mean 'bf16'\?"),
        ({"precision": "fp64"}, r"'precision': 'fp64' is not allowed \(valid: fp32, bf16\)"),
        ({"epochs": 0}, r"'epochs': 0 is out of range \(must be >= 1\)"),
        ({"epochs": None}, r"'epochs': None is out of range \(must be >= 1\)"),
        ({"batch_size": -64}, r"'batch_size': -64 is out of range \(must be >= 1\)"),
        ({"image_size": -1}, r"'image_size': -1 is out of range \(must be >= 0\)"),
        ({"randaugment": 31}, r"'randaugment': 31 is out of range \(must be in \[0, 30\]\)"),
        ({"randaugment": -1}, r"'randaugment': -1 is out of range"),
    ],
)
def test_bad_engine_values_name_method_key_value_and_allowed(overrides, expect):
    message = _bad(_spec(), overrides)
    assert message.startswith("method 'mine', config key ")
    assert re.search(expect, message), message
    assert "plugin bug" not in message


def test_epochs_argument_is_checked_too():
    assert re.search(r"'epochs': 0 is out of range", _bad(_spec(), epochs=0))


def test_the_dataset_placeholders_still_resolve():
    _, cfg = resolve(_spec(), DIGITS)
    assert cfg["image_size"] == 32 and cfg["augment"] == "crop_flip"
    _, cfg = resolve(_spec(), DIGITS, overrides={"image_size": 0, "augment": "none", "randaugment": 30, "epochs": 1})
    assert cfg["image_size"] == 32 and cfg["augment"] == "none" and cfg["randaugment"] == 30
    broken = DatasetSpec(name="broken", load=lambda *a: None, table="mnist", num_classes=10, image_size=32,
                         augment="flip")
    with pytest.raises(ConfigError, match=r"dataset 'broken' declares augment 'flip'.*plugin bug"):
        resolve(_spec(), broken)


# ------------------------------------------------------------------------- resolve: method keys


def test_bad_method_values_are_config_errors_with_a_suggestion():
    assert _bad(_spec(), {"score": "mxp"}) == (
        "method 'mine', config key 'score': 'mxp' is not allowed (valid: msp, mls); did you mean 'msp'?")
    assert _bad(_spec(), {"score": "zzz"}) == "method 'mine', config key 'score': 'zzz' is not allowed (valid: msp, mls)"
    assert _bad(_spec(), {"lr": 0}) == "method 'mine', config key 'lr': 0.0 is out of range (must be > 0)"
    assert _bad(_spec(), {"betas": [0.9, 1.0]}) == (
        "method 'mine', config key 'betas': [0.9, 1.0] is out of range (each element must be in [0, 1))")
    # a key whose default is None may stay None, but a value must be allowed
    assert resolve(_spec(), DIGITS)[1]["hint"] is None
    assert resolve(_spec(), DIGITS, overrides={"hint": "b"})[1]["hint"] == "b"
    assert "'hint': 'c' is not allowed (valid: a, b)" in _bad(_spec(), {"hint": "c"})


def test_good_method_values_resolve_unchanged():
    _, cfg = resolve(_spec(), DIGITS, overrides={"score": "mls", "lr": 1e-5, "betas": [0.0, 0.5]})
    assert (cfg["score"], cfg["lr"], cfg["betas"]) == ("mls", 1e-5, [0.0, 0.5])


def test_a_recipe_value_that_breaks_its_option_is_a_plugin_bug():
    spec = _spec(recipes={"paper": {"*": {"score": "max"}, "digits": {"lr": -1.0}}}, default_recipe="paper")
    message = _bad(spec, {"score": "mls"})  # --set fixes score, the recipe's lr stays
    assert message == "plugin bug: recipe 'paper' of method 'mine', config key 'lr': -1.0 is out of range (must be > 0)"
    assert _bad(spec, {"lr": 0.1}).startswith("plugin bug: recipe 'paper' of method 'mine', config key 'score': 'max'")
    resolve(spec, DIGITS, overrides={"score": "mls", "lr": 0.1})


@pytest.mark.parametrize(
    ("spec", "expect"),
    [
        (_spec(options={"scroe": Option(choices=("msp",))}),
         r"^method 'mine' declares an option for 'scroe', which is not one of its config keys \(plugin bug\); did you mean 'score'"),
        (_spec(options={"epochs": Option(minimum=5)}),
         r"^method 'mine' declares an option for the engine key 'epochs'.*\(plugin bug\)"),
        (_spec(options={"lr": {"minimum": 0}}), r"^method 'mine': options\['lr'\] is dict, expected osrbench.method.Option"),
        (_spec(defaults={"score": "energy"}),
         r"^plugin bug: the default of method 'mine', config key 'score': 'energy' is not allowed \(valid: msp, mls\)"),
        (_spec(defaults={"lr": 0.0}), r"^plugin bug: the default of method 'mine', config key 'lr': 0\.0 is out of range"),
        (_spec(defaults={"epochs": 0}), r"^plugin bug: the default of method 'mine', config key 'epochs': 0"),
    ],
)
def test_broken_options_are_plugin_bugs(spec, expect):
    assert re.search(expect, _bad(spec)), _bad(spec)
    with pytest.raises(ConfigError, match=expect):
        config.check_options(spec)


# --------------------------------------------------------------------------- the installed methods

INSTALLED = ("softmax", "openmax", "gcpl", "rpl", "arpl", "arpl-cs", "dias", "energy")


@pytest.mark.parametrize("name", INSTALLED)
def test_installed_methods_declare_valid_options_and_every_recipe_resolves(name):
    reg = plugins.get()
    if name not in reg.methods:
        pytest.skip(f"{name} not installed")
    spec = reg.method(name)
    config.check_options(spec)
    assert spec.options, f"{name} declares no options"
    for recipe in spec.recipes:
        for dataset in reg.datasets.values():
            resolve(spec, dataset, recipe)


@pytest.mark.parametrize(
    ("name", "overrides", "expect"),
    [
        ("softmax", {"score": "mxp"}, r"'score': 'mxp' is not allowed \(valid: msp, mls\); did you mean 'msp'"),
        ("softmax", {"optimizer": "adamw"}, r"'optimizer': 'adamw' is not allowed \(valid: sgd, adam\); did you mean 'adam'"),
        ("softmax", {"schedule": "cosine"}, r"'schedule': 'cosine' is not allowed \(valid: multistep, mls-cosine\)"),
        ("softmax", {"lr": 0.0}, r"'lr': 0\.0 is out of range \(must be > 0\)"),
        ("softmax", {"label_smoothing": 1.5}, r"'label_smoothing': 1\.5 is out of range \(must be in \[0, 1\]\)"),
        ("arpl", {"temp": 0.0}, r"'temp': 0\.0 is out of range \(must be > 0\)"),
        ("arpl", {"weight_decay": -1e-4}, r"'weight_decay': -0\.0001 is out of range \(must be >= 0\)"),
        ("arpl-cs", {"gan_mode": "wrapped"}, r"'gan_mode': 'wrapped' is not allowed \(valid: auto, reference, wrap, native, mls-release\)"),
        ("arpl-cs", {"nz": 0}, r"'nz': 0 is out of range \(must be >= 1\)"),
        ("arpl-cs", {"gan_betas": [0.5, 1.5]}, r"'gan_betas': \[0\.5, 1\.5\] is out of range \(each element must be in \[0, 1\)\)"),
        ("dias", {"optim_mode": "adm"}, r"'optim_mode': 'adm' is not allowed \(valid: sgd, adam\); did you mean 'adam'"),
        ("dias", {"alpha_hard": 1.5}, r"'alpha_hard': 1\.5 is out of range \(must be in \[0, 1\]\)"),
        ("dias", {"temperature": 0.0}, r"'temperature': 0\.0 is out of range \(must be > 0\)"),
        ("dias", {"milestones": [60, -1]}, r"'milestones': \[60, -1\] is out of range \(each element must be >= 0\)"),
        ("energy", {"temperature": -1.0}, r"'temperature': -1\.0 is out of range \(must be > 0\)"),
    ],
)
def test_installed_methods_reject_bad_values(name, overrides, expect):
    reg = plugins.get()
    if name not in reg.methods:
        pytest.skip(f"{name} not installed")
    message = _bad(reg.method(name), overrides)
    assert message.startswith(f"method {name!r}, config key ") and re.search(expect, message), message


def test_the_new_plugin_template_declares_options():
    from osrbench import scaffold

    source = scaffold.PLUGIN.substitute(name="mine", cls="Mine", package="osrbench_mine")
    namespace: dict = {}
    exec(compile(source, "plugin.py", "exec"), namespace)
    spec = MethodSpec("mine", namespace["Mine"], defaults=namespace["DEFAULTS"], options=namespace["OPTIONS"])
    config.check_options(spec)
    assert set(namespace["OPTIONS"]) == set(namespace["DEFAULTS"])
    assert "'temperature': 0.0 is out of range" in _bad(spec, {"temperature": 0.0})


# ----------------------------------------------------------------------------- conformance suite


def _registry(spec: MethodSpec) -> plugins.Plugins:
    reg = plugins.Plugins(entry_points=False)
    reg.methods[spec.name] = spec
    reg.origin[f"method:{spec.name}"] = "osrbench"
    return reg


@pytest.mark.parametrize(
    ("spec", "expect"),
    [
        (_spec(options={"scroe": Option(choices=("msp",))}), r"^spec: options: method 'mine' declares an option for 'scroe'"),
        (_spec(defaults={"score": "energy"}), r"^spec: options: plugin bug: the default of method 'mine', config key 'score'"),
        (_spec(recipes={"paper": {"*": {"score": "max"}}}),
         r"^spec: recipe 'paper' for '\*' does not resolve: plugin bug: recipe 'paper'.*'score': 'max'"),
    ],
)
def test_the_spec_check_rejects_broken_options(spec, expect):
    with pytest.raises(ConformanceError, match=expect):
        run_check("mine", "spec", registry=_registry(spec))


def test_the_spec_check_passes_valid_options():
    assert "with options" in run_check("mine", "spec", registry=_registry(_spec())).message


# ------------------------------------------------------------------------------------ the CLI


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("osrbench: error: ")
    return err[0]


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--method", "softmax", "--dataset", "digits", "--set", "score=mxp", "--quiet"],
        ["compare", "softmax", "--dataset", "digits", "--splits", "0", "--set", "score=mxp", "--quiet"],
    ],
)
def test_a_bad_option_value_is_a_usage_error_and_writes_nothing(capsys, tmp_path, argv):
    out = tmp_path / "runs"
    assert cli.main([*argv, "--out", str(out), "--device", "cpu"]) == 2
    line = _one_error_line(capsys)
    assert "'score'" in line and "'mxp'" in line and "msp" in line and "did you mean 'msp'" in line
    assert not out.exists() and list(tmp_path.rglob("*")) == []


def test_list_options_shows_keys_defaults_and_allowed_values(capsys):
    assert cli.main(["list", "--options", "softmax"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines()[3:] if line.strip()}
    assert {"epochs", "augment", "precision", "score", "lr", "label_smoothing"} <= set(rows)
    assert re.search(r'^score\s+"msp"\s+str\s+msp, mls\s+test score', rows["score"])
    assert re.search(r"^lr\s+0\.1\s+float\s+> 0", rows["lr"])
    assert re.search(r'^augment\s+"dataset"\s+str\s+dataset, none, crop_flip', rows["augment"])
    assert re.search(r"^randaugment\s+0\s+int\s+in \[0, 30\]", rows["randaugment"])
    assert re.search(r'^cuda_graphs\s+"auto"\s+bool \| str\s+auto, true, false\s+.*auto: on for graph_safe',
                     rows["cuda_graphs"])


def test_list_options_of_an_unknown_method_is_a_usage_error(capsys):
    assert cli.main(["list", "--options", "softmx"]) == 2
    assert re.search(r"unknown method 'softmx'.*did you mean 'softmax'", _one_error_line(capsys))
    assert capsys.readouterr().out == ""
