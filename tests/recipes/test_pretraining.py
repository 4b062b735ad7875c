"""What the synthetic experiments pre-train: encoders for ASR (CTC), prosody and
sound events, saved and reloaded identically and made once; and the LLM."""

import json
import math
import sys

import pytest
import torch
from fixture_corpora import RECIPES, load_recipe

from speechbrain_mowe.artifacts import MissingArtifactError
from speechbrain_mowe.lobes import load_encoder
from speechbrain_mowe.training import task_manifests

sys.path.append(str(RECIPES / "Synthetic"))  # the recipe imports its sibling modules
synthetic = load_recipe("Synthetic/synthetic_prepare.py")
pretraining = load_recipe("Synthetic/pretraining.py")

ENCODER = {"name": "tiny_conv", "config": {"channels": [16, 24], "strides": [2, 2]}}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("synthetic")
    synthetic.prepare_synthetic(folder, train_size=8, valid_size=2, test_size=2,
                                tasks=["asr", "er", "aac"], seed=3)  # fmt: skip
    return folder


def test_prosody_targets_follow_pitch_and_loudness():
    t = torch.arange(16000) / 16000
    tone = 0.5 * torch.sin(2 * math.pi * 200 * t)
    tone[8000:] *= 0.01  # 40 dB quieter in its second half
    targets = pretraining.Prosody().targets(None, tone)
    loud, quiet = targets[10:40], targets[60:90]
    assert targets.shape[1] == 3 and 80 <= targets.shape[0] <= 100  # a row per 10 ms, less a window
    assert torch.allclose(loud[:, 0], torch.tensor(math.log2(200 / 150)), atol=0.05)
    assert bool((loud[:, 2] == 1).all()) and bool((quiet[:, 2] == 0).all())  # voiced or not
    assert float(loud[:, 1].mean() - quiet[:, 1].mean()) == pytest.approx(40 / 20, abs=0.05)


def test_event_targets_name_the_tags_of_a_scene():
    targets = pretraining.EventTags().targets("tone:high clicks:2", None)
    assert targets.tolist() == [float(tag in ("tone:high", "clicks:2"))
                                for tag in pretraining.EVENT_TAGS]  # fmt: skip
    assert len(pretraining.EVENT_TAGS) == 8


@pytest.mark.parametrize("objective, tasks", [("ctc", ["asr"]), ("prosody", ["asr", "er"]),
                                               ("events", ["aac"])])  # fmt: skip
def test_an_encoder_is_pre_trained_once_and_reloads_identically(corpus, tmp_path, objective,
                                                                tasks):  # fmt: skip
    def pretrain(**options):
        return pretraining.pretrain_encoder(
            tmp_path, objective, objective, task_manifests(corpus, tasks, "train"),
            task_manifests(corpus, tasks, "valid"), corpus, ENCODER, **{
                "number_of_epochs": 1, "seed": 0, "run_opts": {"noprogressbar": True},
                **options},
        )  # fmt: skip

    with pytest.raises(MissingArtifactError, match=f"{objective}: .* was never made"):
        pretrain(skip_prep=True)
    path = pretrain()
    assert path.parent.name.startswith(f"{objective}-")
    saved = torch.load(path, weights_only=True)
    assert (saved["name"], saved["config"]) == (ENCODER["name"], ENCODER["config"])
    encoder = load_encoder(path).eval()
    for name, value in encoder.state_dict().items():
        assert torch.equal(value, saved["state_dict"][name]), name
    wav = torch.randn(1, 8000) * 0.1
    again = load_encoder(path).eval()
    assert torch.equal(encoder(wav)[0], again(wav)[0])
    record = json.loads((path.parent / "pretraining.json").read_text())
    assert record["options"]["objective"] == objective and math.isfinite(record["valid_score"])
    written = path.stat().st_mtime_ns
    assert pretrain() == path and path.stat().st_mtime_ns == written  # made once
    assert pretrain(skip_prep=True) == path
    other = pretrain(seed=1)  # other options: a new encoder beside it, the old one untouched
    assert other.parent != path.parent and path.stat().st_mtime_ns == written


def test_the_llm_learns_the_training_texts_before_any_audio(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    texts = ["the dog sees a ball", "der Hund sieht einen Ball", "a high tone"] * 8
    config = {"hidden_size": 32, "num_layers": 1, "vocab_size": 300}
    folder = pretraining.pretrain_llm(tmp_path / "llm", texts, texts, config,
                                      number_of_epochs=4, lr=0.01, batch_size=8)  # fmt: skip
    losses = json.loads((folder / "llm_options.json").read_text())["losses"]
    assert len(losses) == 4 and losses[-1] < losses[0] / 2
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer.decode(tokenizer("der Hund sieht")["input_ids"]) == "der Hund sieht"
    assert AutoModelForCausalLM.from_pretrained(folder).config.num_hidden_layers == 1
