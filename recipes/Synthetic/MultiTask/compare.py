#!/usr/bin/env python3
"""MoWE against its base-only baseline on the synthetic tasks, same budget.

Runs ``train.py`` once per family of ``compare_families`` (by default the
CPU-sized MoWE ``conv_mowe`` and ``conv_base_only``) with everything else
equal: the same corpus, the same frozen base encoder pre-trained for ASR
only, the same initial LLM, epochs, batches and seed. Then it prints each
task's test metric side by side, the weak encoders each task chose, and the
total wall time, and writes them to ``<experiment_folder>/comparison.md``
and ``comparison.json``. The trained models stay in
``<experiment_folder>/<family>/`` and load with
``MoWEAudioLLM.from_hparams(source=<experiment_folder>/<family>)``.

To run (about ten minutes on two CPU cores)::

    python compare.py hparams/mowe.yaml
"""

import json
import sys
import time
from pathlib import Path
from typing import Dict, List

from speechbrain.utils.distributed import run_on_main

from speechbrain_mowe.experiment import setup_experiment

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train  # noqa: E402
from synthetic_prepare import SEX_LABELS  # noqa: E402  (importable once train is)

#: (task, metric, how it reads): the metric each task is compared on.
METRICS = [
    ("asr", "WER", "WER % (lower is better)"),
    ("asr", "CER", "CER % (lower is better)"),
    ("ast", "BLEU", "BLEU (higher is better)"),
    ("er", "WA", "accuracy % (higher is better)"),
    ("er", "UA", "unweighted accuracy %"),
    ("aac", "CIDEr_D", "CIDEr-D (higher is better)"),
    ("aac", "BLEU_4", "BLEU-4"),
    ("speaker_sex", "WA", "accuracy % (higher is better)"),
]


def family_summary(brain, seconds: float) -> Dict:
    """Test metrics, routing, sizes and training time of one trained model."""
    stats = brain.test_results["test"]
    metrics = {}
    for task, metric, _ in METRICS:
        key = f"{task}/{task}/{metric}"
        if key in stats:
            metrics[f"{task}/{metric}"] = stats[key]
    params = list(brain.modules.parameters())
    return {
        "metrics": metrics,
        "routing": {k.split("/")[1]: v for k, v in stats.items() if k.startswith("routing/")},
        "trainable_parameters": sum(p.numel() for p in params if p.requires_grad),
        "parameters": sum(p.numel() for p in params),
        "seconds": round(seconds, 1),
        "output_folder": str(brain.hparams.output_folder),
    }


def comparison_table(results: Dict[str, Dict], chance: Dict[str, float]) -> List[str]:
    """Markdown lines: one row per metric, one column per family."""
    families = list(results)
    lines = [
        "| task | metric | " + " | ".join(families) + " | chance |",
        "|---|---|" + "---:|" * (len(families) + 1),
    ]
    for task, metric, reading in METRICS:
        values = [results[f]["metrics"].get(f"{task}/{metric}") for f in families]
        if all(v is None for v in values):
            continue
        cells = ["" if v is None else f"{v:.2f}" for v in values]
        level = chance.get(task) if metric in ("WA", "UA") else None
        cells.append("" if level is None else f"{level:.2f}")
        lines.append(f"| {task} | {reading} | " + " | ".join(cells) + " |")
    sizes = (("trainable parameters", "trainable_parameters"), ("training + test s", "seconds"))
    for label, key in sizes:
        cells = [str(results[f][key]) for f in families]
        lines.append(f"| | {label} | " + " | ".join(cells) + " | |")
    return lines


def main(argv):
    """Trains each family of ``compare_families`` and compares them."""
    start = time.time()
    settings, run_opts, _ = setup_experiment(argv, folder_key="experiment_folder")
    # The corpus, base encoder and LLM the families share are made once, first.
    run_on_main(train.prepare_experiment, args=[settings, run_opts])
    prepared = time.time() - start
    others = [arg for arg in argv if not arg.startswith("--model_family")]
    results = {}
    for family in settings["compare_families"]:
        began = time.time()
        brain = train.main(others + [f"--model_family={family}"], prepare=False)
        results[family] = family_summary(brain, time.time() - began)
    labels = {"er": settings["emotion_labels"], "speaker_sex": SEX_LABELS}
    chance = {task: 100.0 / len(names) for task, names in labels.items()}

    lines = ["# MoWE vs base-only on the synthetic tasks (test split)", ""]
    lines += comparison_table(results, chance)
    for family, result in results.items():
        if result["routing"]:
            lines += ["", f"Weak encoders chosen per task ({family}, test split):"]
            lines += [f"- {task}: {shares}" for task, shares in result["routing"].items()]
    total = time.time() - start
    lines += [
        "",
        f"Corpus, base encoder pre-training and LLM: {prepared:.0f} s",
        f"Total wall time: {total / 60:.1f} min ({total:.0f} s)",
    ]
    report = "\n".join(lines)
    print(report)
    folder = Path(settings["experiment_folder"])
    (folder / "comparison.md").write_text(report + "\n", encoding="utf-8")
    with open(folder / "comparison.json", "w", encoding="utf-8") as f:
        summary = {"results": results, "chance": chance, "preparation_seconds": prepared}
        json.dump({**summary, "seconds": total}, f, indent=2)
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
