"""Each recipe prepares its fixture corpus, trains the tiny model 2 epochs and tests it."""

import json
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
    result = read_metrics(out, "test-clean")
    (group,) = result.groups
    assert (group.dataset, group.task, group.options, group.examples) == (
        "test-clean", "asr", {}, 1
    )  # fmt: skip
    assert set(group.metrics) == {"WER", "CER", "WER_norm", "CER_norm"}
    assert set(result.routing) == {"asr"}
    assert [h["id"] for h in _hypotheses(out, "test-clean")] == ["1089-134686-0000"]
    assert (out / "test_results" / "test-clean" / "test-clean_asr_wer.txt").exists()
    results = (out / "test_results" / "test-clean" / "results.txt").read_text()
    assert "WER_norm" in results


def test_covost2_ast(tmp_path, corpora, whisper_dir, llama_dir):
    out, _ = _run(
        "CoVoST2/AST", tmp_path, whisper_dir, llama_dir, [f"--data_folder={corpora['covost']}"]
    )
    result = read_metrics(out, "test")
    assert result.metric("test", "ast", "BLEU", target_language="de") >= 0
    assert result.groups[0].details["tokenizer"] == "13a"
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
    (group,) = read_metrics(out, "iemocap").groups
    assert {"WA", "UA", "unparseable"} <= set(group.metrics)
    assert set(group.details["confusion"]) == set(group.details["labels"])
    results = (out / "test_results" / "iemocap" / "results.txt").read_text()
    assert "reference \\ predicted" in results and "<unparseable>" in results


def test_clotho_aac(tmp_path, corpora, whisper_dir, llama_dir):
    out, _ = _run(
        "Clotho/AAC", tmp_path, whisper_dir, llama_dir, [f"--data_folder={corpora['clotho']}"]
    )
    (group,) = read_metrics(out, "evaluation").groups
    names = {"BLEU_1", "BLEU_2", "BLEU_3", "BLEU_4", "ROUGE_L", "CIDEr_D"}
    assert names <= set(group.metrics)
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
    assert asr.metric("librispeech", "asr", "WER") >= 0
    # Test-time routing: each of the pool's two experts gets a share, adding up to 100%.
    shares = asr.routing["asr"]
    assert list(shares) == ["0:TinyConvEncoder", "1:TinyConvEncoder"]
    assert sum(shares.values()) == pytest.approx(100.0)
    assert (
        "[weak encoders chosen per task]"
        in (out / "test_results" / "librispeech" / "results.txt").read_text()
    )
    assert read_metrics(out, "covost2").metric("covost2", "ast", "BLEU") >= 0
    assert read_metrics(out, "iemocap").metric("iemocap", "er", "UA") >= 0
    assert read_metrics(out, "clotho").metric("clotho", "aac", "CIDEr_D") >= 0
    log = (out / "train_log.txt").read_text()
    for task in ("asr", "ast", "er", "aac"):
        assert f"train loss_{task}:" in log and f"train routing_{task}:" in log
