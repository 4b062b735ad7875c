"""The inference folder rebuilds the model that was trained: settings given in the
recipe's ``model:`` block or on the command line, and a task that a recipe file
registered with its own scorer, all reproduced in a fresh process."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from ruamel.yaml import YAML

sys.path.insert(0, str(Path(__file__).parent))
from recipe_runs import (  # noqa: E402
    RECIPES,
    load_train_script,
    make_short_librispeech,
    read_metrics,
    tiny_overrides,
)

YAML_FILE = RECIPES / "LibriSpeech" / "ASR" / "hparams" / "mowe.yaml"
#: Loads a folder in a new process, answers every test clip with the instruction
#: and task of its manifest row, and prints the answers (and what was rebuilt).
FRESH_PROCESS = """
import json, sys
from speechbrain.utils.data_utils import batch_pad_right
from speechbrain_mowe.dataio import load_audio, load_manifest
from speechbrain_mowe.inference import PretrainedAudioLLM

folder, manifest, root, shortcut = sys.argv[1:5]
model = PretrainedAudioLLM.from_hparams(source=folder)
rows = load_manifest(manifest, root)
wavs, lens = batch_pad_right([load_audio(row["wav"]) for row in rows.values()])
answers = dict(zip(rows, model.generate_batch(
    wavs, lens, [r["instruction"] for r in rows.values()], [r["task"] for r in rows.values()])))
if shortcut:
    answers = {utt: getattr(model, shortcut)(row["wav"]) for utt, row in rows.items()}
mowe = model.mods.model.mowe_encoder
print(json.dumps({"answers": answers, "top_k": mowe.router.top_k, "weak_dim": mowe.weak_dim,
                  "tasks": model.mods.model.tasks}))
"""


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_short_librispeech(tmp_path_factory.mktemp("ls"))


def _arguments(corpus, out, whisper_dir, llama_dir, **options):
    argv = [f"--data_folder={corpus}", "--train_splits=[train-clean-100]", "--lowercase=True"]
    argv += ["--valid_splits=[dev-clean]", "--test_splits=[test-clean]"]
    return argv + tiny_overrides(out, whisper_dir, llama_dir, max_batch_duration=3.0, **options)


def _fresh_process(out, corpus, shortcut=""):
    manifest = out / "manifests" / "test-clean.csv"
    done = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS, str(out), str(manifest), str(corpus), shortcut],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


def _hypotheses(out):
    path = out / "test_results" / "test-clean" / "hypotheses.jsonl"
    return {r["id"]: r["hypothesis"] for r in map(json.loads, path.read_text().splitlines())}


@pytest.mark.parametrize("where", ["recipe_yaml", "command_line"])
def test_settings_from_anywhere_are_rebuilt(tmp_path, corpus, whisper_dir, llama_dir, where):
    yaml_file, extra = YAML_FILE, {}
    if where == "recipe_yaml":  # a user's edit of the recipe's model block
        text = YAML_FILE.read_text()
        block = "    settings: !ref <model_settings>\n"
        assert block in text
        yaml_file = tmp_path / "mowe.yaml"
        yaml_file.write_text(text.replace(block, block + "    top_k: 2\n    weak_dim: 48\n"))
    else:
        extra["model_settings"] = "{top_k: 2, weak_dim: 48}"
    out = tmp_path / "out"
    script = load_train_script("LibriSpeech/ASR/train.py")
    brain = script.main([str(yaml_file), *_arguments(corpus, out, whisper_dir, llama_dir, **extra)])
    trained = brain.model.mowe_encoder
    assert (trained.router.top_k, trained.weak_dim) == (2, 48)

    written = YAML().load((out / "inference.yaml").read_text())
    assert dict(written["model_settings"]) == {
        "weak_dim": 48, "top_k": 2, "aux_weight": 0.1, "long_audio": "refuse",
        "attn_implementation": None, "gradient_checkpointing": False,
        "prompt_aware_lora": False, "projector_norm": 1.0,
    }  # fmt: skip
    rebuilt = _fresh_process(out, corpus)
    assert (rebuilt["top_k"], rebuilt["weak_dim"]) == (2, 48)
    assert rebuilt["answers"] == _hypotheses(out)


def test_a_recipe_task_with_its_own_scorer_trains_and_serves(tmp_path, corpus, whisper_dir,
                                                             llama_dir):  # fmt: skip
    out = tmp_path / "out"
    argv = [str(YAML_FILE), "--tasks=[word_count]", "--scorer_options={word_count: {tolerance: 1}}"]
    argv += _arguments(corpus, out, whisper_dir, llama_dir)
    done = subprocess.run(
        [sys.executable, str(Path(__file__).parent / "word_count_recipe.py"), *argv],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = read_metrics(out, "test-clean")
    (group,) = result.groups
    assert (group.task, set(group.metrics)) == ("word_count", {"accuracy", "MAE", "tolerance"})
    assert group.metrics["tolerance"] == 1.0  # the recipe's option over the registered one
    written = YAML().load((out / "inference.yaml").read_text())
    assert dict(written["answers"]["word_count"]) == {
        "instruction": "How many words are spoken?",
        "join": None,
        "shortcut": "count_words_file",
    }
    # The inference process never imports the recipe: the folder tells it the task.
    served = _fresh_process(out, corpus, shortcut="count_words_file")
    assert served["tasks"] == ["word_count"]
    assert served["answers"] == _hypotheses(out)
