"""Scorer parameters: ``--scorer name:key=value`` parsing, the default tuning policy against the
README's table, and how chosen values are described (the CLI end to end is in test_score.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from osrbench import plugins, scoring
from osrbench.commands.score import parse_scorers
from osrbench.errors import UserError

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture(scope="module")
def reg():
    return plugins.get()


def test_names_and_hand_set_parameters_are_parsed_with_their_declared_types(reg):
    names, hand = parse_scorers(reg, "energy:temperature=10,gen:gamma=0.5,m=10,msp,energy")
    assert names == ["energy", "gen", "msp"]
    assert hand == {"energy": {"temperature": 10}, "gen": {"gamma": 0.5, "m": 10}}
    assert type(hand["energy"]["temperature"]) is int and type(hand["gen"]["gamma"]) is float
    assert parse_scorers(reg, "react:percentile=85.0")[1] == {"react": {"percentile": 85}}
    assert parse_scorers(reg, "openmax:distance=eucos,alpha=2")[1] == {"openmax": {"distance": "eucos", "alpha": 2}}
    assert parse_scorers(reg, None) == (list(reg.scorers), {})


@pytest.mark.parametrize("text, message", [
    ("energy:T=10", "scorer 'energy' has no parameter 'T' (its parameters: temperature)"),
    ("msp:x=1", "scorer 'msp' has no parameter 'x' (its parameters: none)"),
    ("energy:temperature=abc", "takes a finite number, not 'abc'"),
    ("energy:temperature=inf", "takes a finite number, not 'inf'"),
    ("gen:m=10.5", "takes an integer"),
    ("temperature=10", "sets a parameter before any scorer is named"),
    ("energy:temperature", "is not name:key=value"),
    ("energy:=3", "is not name:key=value"),
    ("energy:temperature=", "is not name:key=value"),
    ("energy:temperature=1,temperature=2", "parameter 'temperature' of scorer 'energy' is set twice"),
    ("ash:percentile=85", "unknown scorer 'ash'"),
    (",", "names no scorer"),
    # values the scorer cannot use: refused before anything is computed, with the range it allows
    ("energy:temperature=0", "parameter 'temperature' must be > 0, not '0'"),
    ("energy:temperature=-1", "must be > 0, not '-1'"),
    ("odin:noise=-0.1", "parameter 'noise' must be >= 0, not '-0.1'"),
    ("knn:k=0", "parameter 'k' must be >= 1, not '0'"),
    ("gen:gamma=0", "must be > 0"),
    ("gen:m=0", "must be >= 1"),
    ("react:percentile=101", "parameter 'percentile' must be in [0, 100], not '101'"),
    ("vim:dim_fraction=1", "must be in (0, 1), not '1'"),
    ("openmax:alpha=0", "must be >= 1"),
    ("openmax:tail_size=0", "must be >= 1"),
    ("openmax:distance=foo", "parameter 'distance' must be one of euclidean, eucos, cosine, not 'foo'"),
])
def test_a_bad_scorer_parameter_is_one_user_error(reg, text, message):
    with pytest.raises(UserError) as exc:
        parse_scorers(reg, text)
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_hand_set_parameters_are_never_tuned_and_the_rest_of_the_grid_is():
    spec = plugins.get().scorer("gen")
    assert scoring.will_tune(spec, True, {"gamma": 0.5}) and not scoring.will_tune(spec, True, {"gamma": 0.5, "m": 10})
    cands = spec.candidates({"gamma": 0.5})
    assert all(c["gamma"] == 0.5 for c in cands) and [c["m"] for c in cands] == [100, 10, 50, 200, 500, 1000]
    assert not scoring.will_tune(spec, False) and not scoring.will_tune(plugins.get().scorer("msp"), True)


def _readme_policy() -> list[dict[str, str]]:
    """Per table of the README's tuning section (digits, Fashion-MNIST, ...): scorer -> 'on'/'off',
    its last column ("tuned by default")."""
    text = README.read_text()
    section = text[text.index("### Tuning post-hoc scorers"):]
    tables: list[dict[str, str]] = []
    for line in section.splitlines()[1:]:
        if line.startswith("#"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 9 and cells[0] == "scorer":
            tables.append({})
        elif len(cells) == 9 and cells[0] and not set(cells[0]) <= set("-:"):
            tables[-1][cells[0]] = cells[-1].split()[0]
    return tables


def test_the_default_tuning_policy_is_the_readme_table_s():
    tables = _readme_policy()
    assert len(tables) >= 3  # digits at 2 and 15 epochs, Fashion-MNIST
    assert all(t == tables[0] for t in tables)  # every table shows the one policy
    table = tables[0]
    reg = plugins.get()
    assert set(table) == set(reg.scorers)  # every scorer measured, no other
    for name, spec in reg.scorers.items():
        assert table[name] in ("on", "off")
        assert scoring.tunes_by_default(spec) == (table[name] == "on"), name
        assert scoring.will_tune(spec, None) == (table[name] == "on" and bool(spec.grid)), name


def test_describe_params_marks_hand_set_and_tuned_values():
    info = {"params": {"temperature": 1000, "noise": 0.0014}, "defaults": {"temperature": 1000, "noise": 0.0014},
            "hand_set": {"temperature": 1000}, "tuned": True}
    assert scoring.describe_params(info) == "temperature=1000 (hand-set), noise=0.0014 (tuned: defaults kept)"
    info = {"params": {"temperature": 100}, "defaults": {"temperature": 1}, "hand_set": {}, "tuned": True}
    assert scoring.describe_params(info) == "temperature=100 (tuned)"
    assert scoring.describe_params({"params": {"k": 50}, "defaults": {"k": 50}, "tuned": False}) == "k=50"
    assert scoring.describe_params({"params": {}, "defaults": {}}) == "-"
    assert re.fullmatch(r"[-\w=., ()]+", scoring.describe_params(info))


def test_a_scorer_s_declared_values_must_fit_its_options():
    from osrbench.method import Option
    from osrbench.scoring import ScoreSpec

    with pytest.raises(ValueError, match="temperature = 0 .default or grid. is not > 0"):
        ScoreSpec("mine", lambda v, f, p: v.logits[:, 0], params={"temperature": 1}, grid={"temperature": [0, 1]},
                  options={"temperature": Option(exclusive_minimum=0)})
    with pytest.raises(ValueError, match="options names .'t'., which are not in params"):
        ScoreSpec("mine", lambda v, f, p: v.logits[:, 0], options={"t": Option(minimum=0)})


def test_list_scorers_shows_each_parameter_s_default_allowed_values_and_grid(capsys):
    from osrbench.cli import main

    assert main(["list", "--scorers"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.strip()}
    assert "temperature=1 (> 0; --tune over [1, 10, 100, 1000])" in rows["energy"]
    assert "distance=euclidean (euclidean, eucos, cosine)" in rows["openmax"]
    assert re.search(r"^msp\s+osrbench\s+logits\s+-\s", rows["msp"])
