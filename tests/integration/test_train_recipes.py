"""Each recipe prepares its fixture corpus, trains the tiny model 2 epochs and tests it."""

import json
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from recipe_runs import (  # noqa: E402
    load_train_script,
    make_corpora,
    multitask_arguments,
    read_metrics,
    tiny_overrides,
)

YAML = "hparams/mowe.yaml"


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    return make_corpora(tmp_path_factory.mktemp("corpora"))


def _run(recipe, tmp_path, whisper_dir, llama_dir, data_args):
    folder = Path(recipe).parent if recipe.endswith(".py") else Path(recipe)
    script = load_train_script(f"{folder}/train.py")
    out = tmp_path / "out"
    argv = [str(script.__file__).replace("train.py", YAML)]
    argv += data_args + tiny_overrides(out, whisper_dir, llama_dir)
    brain = script.main(argv)
    log = (out / "train_log.txt").read_text()
    assert "epoch: 1" in log and "epoch: 2" in log
    return out, brain


def _hypotheses(out, test_set):
    path = out / "test_results" / test_set / "hypotheses.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_librispeech_asr(tmp_path, corpora, whisper_dir, llama_dir):
    out, _ = _run(
        "LibriSpeech/ASR",
        tmp_path,
        whisper_dir,
        llama_dir,
        [f"--data_folder={corpora['librispeech']}", "--train_splits=[train-clean-100]",
         "--test_splits=[test-clean]"],
    )  # fmt: skip
    metrics = read_metrics(out, "test-clean")
    assert set(metrics) == {
        "loss",
        "test-clean/asr/WER",
        "test-clean/asr/CER",
        "test-clean/asr/WER_norm",
        "test-clean/asr/CER_norm",
        "routing/asr",
    }
    assert [h["id"] for h in _hypotheses(out, "test-clean")] == ["1089-134686-0000"]
    assert (out / "test_results" / "test-clean" / "test-clean_asr_wer.txt").exists()
    results = (out / "test_results" / "test-clean" / "results.txt").read_text()
    assert "WER_norm" in results


def test_covost2_ast(tmp_path, corpora, whisper_dir, llama_dir):
    out, _ = _run(
        "CoVoST2/AST", tmp_path, whisper_dir, llama_dir, [f"--data_folder={corpora['covost']}"]
    )
    metrics = read_metrics(out, "test")
    assert {"loss", "test/ast/BLEU"} <= set(metrics)
    results = (out / "test_results" / "test" / "results.txt").read_text()
    assert "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp" in results
    assert _hypotheses(out, "test")[0]["references"] == ["Bis bald."]


def test_iemocap_er(tmp_path, corpora, whisper_dir, llama_dir):
    out, _ = _run(
        "IEMOCAP/ER",
        tmp_path,
        whisper_dir,
        llama_dir,
        [f"--data_folder={corpora['iemocap']}", "--fold=2"],
    )
    metrics = read_metrics(out, "iemocap")
    assert {"loss", "iemocap/er/WA", "iemocap/er/UA", "iemocap/er/unparseable"} <= set(metrics)
    results = (out / "test_results" / "iemocap" / "results.txt").read_text()
    assert "reference \\ predicted" in results and "<unparseable>" in results


def test_clotho_aac(tmp_path, corpora, whisper_dir, llama_dir):
    out, _ = _run(
        "Clotho/AAC", tmp_path, whisper_dir, llama_dir, [f"--data_folder={corpora['clotho']}"]
    )
    metrics = read_metrics(out, "evaluation")
    names = {"BLEU_1", "BLEU_2", "BLEU_3", "BLEU_4", "ROUGE_L", "CIDEr_D"}
    assert {f"evaluation/aac/{n}" for n in names} <= set(metrics)
    results = (out / "test_results" / "evaluation" / "results.txt").read_text()
    assert "METEOR" in results and "Java" in results
    assert len(_hypotheses(out, "evaluation")[0]["references"]) == 5


def test_multitask_reports_all_four_metrics(tmp_path, corpora, whisper_dir, llama_dir):
    out, brain = _run(
        "MultiTask",
        tmp_path,
        whisper_dir,
        llama_dir,
        multitask_arguments(corpora),
    )
    asr = read_metrics(out, "librispeech")
    assert asr.keys() >= {"librispeech/asr/WER", "routing/asr"}
    # Test-time routing: each of the pool's two experts gets a share, adding up to 100%.
    shares = re.findall(r"(\d):TinyConvEncoder (\d+)%", asr["routing/asr"])
    assert [e for e, _ in shares] == ["0", "1"] and 99 <= sum(int(p) for _, p in shares) <= 101
    assert (
        "[weak encoders chosen per task]"
        in (out / "test_results" / "librispeech" / "results.txt").read_text()
    )
    assert read_metrics(out, "covost2").keys() >= {"covost2/ast/BLEU"}
    assert read_metrics(out, "iemocap").keys() >= {"iemocap/er/UA"}
    assert read_metrics(out, "clotho").keys() >= {"clotho/aac/CIDEr_D"}
    log = (out / "train_log.txt").read_text()
    for task in ("asr", "ast", "er", "aac"):
        assert f"train loss_{task}:" in log and f"train routing_{task}:" in log
