"""The shipped stage files, and how a stage sets the parts that train."""

from pathlib import Path

import pytest
from ruamel.yaml import YAML

from speechbrain_mowe.families import load_family
from speechbrain_mowe.training.stages import (
    PARTS,
    check_stages,
    load_stages,
    part_of,
    set_trainable_parts,
)

MULTITASK = Path(__file__).parents[2] / "recipes" / "MultiTask" / "hparams"
STAGE_FILES = sorted(MULTITASK.glob("*_stages.yaml"))


@pytest.fixture
def sources(whisper_dir, llama_dir):
    return {"whisper_source": whisper_dir, "llm_source": llama_dir}


def test_salmonn_and_wavllm_stage_files_are_shipped():
    assert [p.name for p in STAGE_FILES] == ["salmonn_stages.yaml", "wavllm_stages.yaml"]


@pytest.mark.parametrize("path", STAGE_FILES, ids=lambda p: p.name)
def test_a_shipped_stage_file_names_the_recipe_sources_and_real_parts(path):
    stages = load_stages(path)
    check_stages(stages, None)
    sources = set(YAML().load((MULTITASK / "mowe.yaml").read_text())["train_data"])
    for stage in stages:
        assert set(stage["trainable"]) <= set(PARTS)
        assert set(stage["train_weights"]) == sources
        assert stage["epoch_counter"].limit >= 1 and "lr_annealing" in stage


def test_unknown_stage_names_and_parts_are_refused(sources):
    with pytest.raises(ValueError, match="run_stages names unknown stage"):
        check_stages([{"name": "a"}, {"name": "b"}], ["c"])
    with pytest.raises(ValueError, match="every stage needs a distinct name"):
        check_stages([{"name": "a"}, {"name": "a"}], None)
    model = load_family("tiny_mowe", sources)
    with pytest.raises(ValueError, match="Unknown part.s. qformer in trainable"):
        set_trainable_parts(model, ["qformer"])


def test_every_parameter_is_in_one_part_and_frozen_parts_stay_saved(sources):
    model = load_family("tiny_mowe", sources)
    assert {part_of(name) for name, _ in model.named_parameters()} == {
        "base_encoder", "weak_encoders", "router", "projector", "lora", "llm"
    }  # fmt: skip
    before = set(model.trainable_state_dict())
    set_trainable_parts(model, ["lora"])
    assert model.mowe_encoder.freeze_weak and not model.mowe_encoder.weak_pool.training
    assert set(model.trainable_state_dict()) == before
    set_trainable_parts(model, ["lora", "llm"])
    llm = {name for name in model.trainable_state_dict() if part_of(name) == "llm"}
    assert llm and set(model.trainable_state_dict()) == before | llm
    set_trainable_parts(model, ["projector"])  # the LLM trained: saved from now on
    assert set(model.trainable_state_dict()) == before | llm
