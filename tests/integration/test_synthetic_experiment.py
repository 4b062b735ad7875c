"""The synthetic experiment end to end, on a small corpus, in its fast
configuration (``hparams/conv.yaml``).

``train.py`` generates the corpus, pre-trains the base encoder with CTC,
builds the LLM and trains MoWE, which must beat, on every task, what
answering every test clip with the most common training answer scores (and
1/4 for the four emotions), by margins that held over five seeds and two
machines; its folder loads for inference. ``compare.py`` trains MoWE and the
base-only baseline with the same budget and two seeds, and reports them
(tables with the spread over seeds, paired differences, routing, a figure).
"""

import csv
import json
import sys
from collections import Counter
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from recipe_runs import RECIPES, load_train_script  # noqa: E402

from speechbrain_mowe.tasks import TASKS  # noqa: E402

YAML = str(RECIPES / "Synthetic" / "MultiTask" / "hparams" / "conv.yaml")
BASE = "{objective: ctc, tasks: [asr], encoder: {name: tiny_conv, config: {n_mels: 40, " \
    "channels: [96, 96, 128], strides: [2, 1, 1]}}, training: {number_of_epochs: 4, " \
    "lr: 0.002, max_batch_duration: 60}}"  # fmt: skip
SMALL = [
    "--train_size=400",
    "--valid_size=10",
    "--test_size=20",
    f"--pretrained_encoders={{base: {BASE}}}",
    "--noprogressbar",
]


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """A folder, and the arguments that make every run here share its corpus,
    base encoder, LLM and feature cache (made by the first run, reused)."""
    folder = tmp_path_factory.mktemp("synthetic")
    argv = [
        f"--corpus_folder={folder / 'corpus'}",
        f"--encoders_folder={folder / 'encoders'}",
        f"--llm_folder={folder / 'llm_init'}",
        f"--feature_cache_folder={folder / 'feature_cache'}",
        *SMALL,
    ]
    return folder, argv


@pytest.fixture(scope="module")
def trained(shared):
    """MoWE trained 12 epochs by train.py."""
    folder, argv = shared
    train = load_train_script("Synthetic/MultiTask/train.py")
    brain = train.main(
        [YAML, f"--experiment_folder={folder / 'mowe'}", "--number_of_epochs=12", *argv]
    )
    return folder, brain


@pytest.fixture(scope="module")
def compared(shared):
    """compare.py's summary (one epoch per system, two seeds) and its experiment folder."""
    folder, argv = shared
    compare = load_train_script("Synthetic/MultiTask/compare.py")
    experiment = folder / "compare"
    return experiment, compare.main(
        [YAML, f"--experiment_folder={experiment}", "--number_of_epochs=1",
         "--compare_seeds=[1, 2]", *argv]
    )  # fmt: skip


def _rows(folder: Path, task: str, split: str):
    with open(folder / "corpus" / f"{task}_{split}.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def constant_answer_score(folder: Path, task: str, metric: str) -> float:
    """The score of answering every test clip with the most common training answer."""
    answer = Counter(row["answer"] for row in _rows(folder, task, "train")).most_common(1)[0][0]
    test = _rows(folder, task, "test")
    options = {"target_language": "de"} if task == "ast" else {}
    scorer = TASKS[task].make_scorer(**options)
    references = [TASKS[task].reference(r["answer"], json.loads(r["references"] or "[]"))
                  for r in test]  # fmt: skip
    scorer.append([r["ID"] for r in test], [answer] * len(test), references)
    return float(scorer.summarize()[metric])


def test_mowe_beats_chance_on_every_task(trained):
    folder, brain = trained
    result = brain.test_results["test"]
    constant = {
        (task, metric): constant_answer_score(folder, task, metric)
        for task, metric in [("asr", "WER"), ("ast", "BLEU"), ("aac", "CIDEr_D")]
    }
    # Margins chosen from this configuration trained with seeds 1986, 1, 2, 3 and 4
    # on one machine (seed 1986 gave the same figures on every run there), and seed
    # 1986 on another machine of the same kind:
    #   WER      64-80 (other machine 72)    constant 93-120; smallest lead 13
    #   BLEU    2.6-8.9 (other machine 3.4)  constant 0.9-2.7; smallest lead 0.7
    #   WA       60-80                       chance 25
    #   CIDEr-D 0.78-2.09 (other machine 1.74) constant 0.21-0.60; smallest lead 0.18
    # Translation and captioning vary most between seeds (20 test clips per task), so
    # for them the claim is only that the model beats the constant answer.
    assert result.metric("asr", "asr", "WER") < min(90.0, constant["asr", "WER"] - 5)
    assert result.metric("ast", "ast", "BLEU") > constant["ast", "BLEU"]
    assert result.metric("er", "er", "WA") > 25.0 + 15
    assert result.metric("aac", "aac", "CIDEr_D") > constant["aac", "CIDEr_D"]


def test_trained_folder_loads_for_inference(trained):
    from speechbrain_mowe.inference import PretrainedAudioLLM

    folder, brain = trained
    run = folder / "mowe" / "conv_mowe" / "seed_1986"
    model = PretrainedAudioLLM.from_hparams(source=str(run))
    hypotheses = {}
    results = run / "test_results" / "test" / "hypotheses.jsonl"
    for line in results.read_text().splitlines():
        record = json.loads(line)
        hypotheses[record["id"]] = record["hypothesis"]
    shortcuts = {
        "asr": model.transcribe_file,
        "ast": model.translate_file,
        "er": model.classify_emotion_file,
        "aac": model.caption_file,
    }
    for task, shortcut in shortcuts.items():
        for row in _rows(folder, task, "test")[:3]:
            path = row["wav"].replace("$data_root", str(folder / "corpus"))
            assert shortcut(path) == hypotheses[row["ID"]]


def test_compare_trains_every_system_and_seed_with_the_same_budget(compared):
    experiment, summary = compared
    assert list(summary) == ["conv_base_only", "conv_mowe"]
    expected = {"asr/WER", "asr/CER", "ast/BLEU", "er/WA", "er/UA", "aac/CIDEr_D", "aac/BLEU_4"}
    saved = json.loads((experiment / "comparison.json").read_text())
    for system, result in summary.items():
        assert set(result["metrics"]) == expected and result["seeds"] == [1, 2]
        for seed in (1, 2):
            run = experiment / system / f"seed_{seed}"
            assert (run / "train_log.txt").read_text().count("epoch: ") == 1
            assert (run / "inference.yaml").is_file()
        # mean and spread over the two seeds, and the paired difference to the baseline
        wer = [saved["runs"][system][str(seed)]["metrics"]["asr"]["WER"] for seed in (1, 2)]
        assert result["metrics"]["asr/WER"]["mean"] == pytest.approx(sum(wer) / 2)
        assert result["metrics"]["asr/WER"]["std"] == pytest.approx(abs(wer[0] - wer[1]) / 2**0.5)
        base = [saved["runs"]["conv_base_only"][str(s)]["metrics"]["asr"]["WER"] for s in (1, 2)]
        difference = result["difference_to_conv_base_only"]["asr/WER"]["mean"]
        assert difference == pytest.approx(sum(wer) / 2 - sum(base) / 2)
    # Only MoWE has weak encoders, a router and routing statistics.
    mowe, base = summary["conv_mowe"], summary["conv_base_only"]
    assert mowe["trainable_parameters"] > base["trainable_parameters"]
    assert set(mowe["routing"]) == {"asr", "ast", "er", "aac"} and not base["routing"]
    # The frozen base encoder was computed once for every system and seed (shared cache).
    assert len(list((experiment.parent / "feature_cache").iterdir())) == 1


def test_compare_report_and_figure_are_saved(compared):
    experiment, summary = compared
    report = (experiment / "comparison.md").read_text()
    assert "Training seeds: [1, 2]" in report
    table = [line for line in report.splitlines() if line.startswith("| ")]
    assert table[0] == "| task | metric | conv_base_only | conv_mowe | chance |"
    wer = next(line for line in table if line.startswith("| asr | WER"))
    value = summary["conv_mowe"]["metrics"]["asr/WER"]
    assert f"{value['mean']:.2f} ± {value['std']:.2f}" in wer
    er = next(line for line in table if line.startswith("| er | accuracy"))
    assert er.endswith("| 25.00 |")
    assert "Paired difference to conv_base_only" in report
    assert "Weak encoders chosen per task (conv_mowe, test split, mean over seeds):" in report
    assert "Total wall time:" in report
    # er beside the linear probe of the frozen base (the weak encoders train: not probed)
    probes = json.loads((experiment / "comparison.json").read_text())["probes"]
    assert probes["encoders"] == ["base"] and list(probes["tasks"]) == ["er"]
    ceiling = next(line for line in table if line.startswith("| er | 25.0 |"))
    base = probes["tasks"]["er"]["probes"]["base"]["test"]
    accuracy = [summary[s]["metrics"]["er/WA"] for s in ("conv_base_only", "conv_mowe")]
    cells = [f"{a['mean']:.2f} ± {a['std']:.2f}" for a in accuracy] + [f"{base:.1f}", "", ""]
    assert ceiling == "| er | 25.0 | " + " | ".join(cells) + " |"
    figure = (experiment / "comparison.png").read_bytes()
    assert figure.startswith(b"\x89PNG") and len(figure) > 10_000
