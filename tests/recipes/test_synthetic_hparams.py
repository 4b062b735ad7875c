"""The synthetic recipe's YAMLs: the feature cache is named after the corpus
it holds, not after how the path to it was written."""

from pathlib import Path

import pytest
from fixture_corpora import RECIPES
from hyperpyyaml import load_hyperpyyaml


def _feature_cache(yaml_name, overrides):
    path = RECIPES / "Synthetic" / "MultiTask" / "hparams" / yaml_name
    with open(path, encoding="utf-8") as f:
        return Path(load_hyperpyyaml(f, overrides)["feature_cache_folder"])


@pytest.mark.parametrize("yaml_name", ["mowe.yaml", "conv.yaml"])
def test_a_relative_or_absolute_experiment_folder_names_the_same_cache(
    yaml_name, tmp_path, monkeypatch
):
    monkeypatch.syspath_prepend(str(RECIPES / "Synthetic"))
    monkeypatch.chdir(tmp_path)
    relative = _feature_cache(yaml_name, {"experiment_folder": "exp"})
    absolute = _feature_cache(yaml_name, {"experiment_folder": str(tmp_path / "exp")})
    moved = _feature_cache(yaml_name, {"experiment_folder": str(tmp_path / "moved")})
    assert relative.name == absolute.name == moved.name
    assert absolute.parent == tmp_path / "exp" / "feature_cache"
    other_corpus = _feature_cache(yaml_name, {"experiment_folder": "exp", "train_size": 7})
    assert other_corpus.name != relative.name
