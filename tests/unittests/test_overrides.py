"""Command-line overrides checked against the recipe YAML at parse time."""

import logging

import pytest

from speechbrain_mowe.training.overrides import OverrideError, check_overrides

YAML = """\
lr: 0.001
epochs: 5
shuffle: true
name: base
splits: [a, b]
options: {k: 1}
nothing: null
folder: !ref <name>/out
built: !new:collections.OrderedDict
"""


@pytest.fixture
def hparams_file(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text(YAML)
    return path


@pytest.mark.parametrize("overrides", [
    "lr: 1\nepochs: 2.5\nshuffle: false\nname: other",
    "splits: [c]\noptions: {}\nnothing: [1]\nfolder: elsewhere\nbuilt: !ref <name>",
    "lr: !ref <epochs>",
])  # fmt: skip
def test_values_that_fit_pass(hparams_file, overrides):
    assert check_overrides(hparams_file, overrides) == []


@pytest.mark.parametrize("override, message", [
    ("lr: abc", "--lr=abc: expected a number (recipe.yaml has lr: 0.001)"),
    ("epochs:", "--epochs=: expected a number (recipe.yaml has epochs: 5)"),
    ("shuffle: 1", "--shuffle=1: expected true or false (recipe.yaml has shuffle: true)"),
    ("name: 3", "--name=3: expected a string (recipe.yaml has name: base)"),
    ("splits: c", "--splits=c: expected a list, e.g. [a, b] (recipe.yaml has splits: [a, b])"),
    ("options: 4", "--options=4: expected a mapping, e.g. {key: value} (recipe.yaml has "
                   "options: {k: 1})"),
])  # fmt: skip
def test_a_value_of_the_wrong_kind_names_key_value_and_expectation(hparams_file, override,
                                                                   message):  # fmt: skip
    with pytest.raises(OverrideError) as error:
        check_overrides(hparams_file, override)
    assert str(error.value) == message


def test_unknown_keys_are_named_and_malformed_yaml_refused(hparams_file, caplog):
    with caplog.at_level(logging.WARNING):
        assert check_overrides(hparams_file, "lrr: 0.1") == ["lrr"]
    assert "recipe.yaml has no key ['lrr']: added as given" in caplog.text
    with pytest.raises(OverrideError, match="do not read as YAML"):
        check_overrides(hparams_file, "lr: [1,")


def test_a_mapping_for_a_null_key_is_merged_not_refused(hparams_file):
    from speechbrain_mowe.training import setup_experiment

    hparams_file.write_text(YAML + "output_folder: !ref <folder>\n")
    hparams, _, _ = setup_experiment([str(hparams_file), "--nothing={asr: 1.0, er: 2}",
                                      f"--name={hparams_file.parent}"])  # fmt: skip
    assert hparams["nothing"] == {"asr": 1.0, "er": 2}
    assert hparams["options"] == {"k": 1}
