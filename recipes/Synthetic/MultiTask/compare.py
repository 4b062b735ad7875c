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
``PretrainedAudioLLM.from_hparams(source=<experiment_folder>/<family>)``.

To run (about five minutes on two CPU cores)::

    python compare.py hparams/mowe.yaml
"""

import json
import sys
import time
from pathlib import Path
from typing import Dict, List, Mapping

from speechbrain.utils.distributed import run_on_main

from speechbrain_mowe.tasks import get_task
from speechbrain_mowe.training import setup_experiment

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train  # noqa: E402


def family_summary(brain, tasks, seconds: float) -> Dict:
    """Test metrics (``{task: {metric: value}}``, the metrics each task
    reports), routing, sizes and training time of one trained model."""
    result = brain.test_results["test"]
    metrics = {
        task: {m.name: result.metric(task, task, m.name) for m in get_task(task).metrics}
        for task in tasks
    }
    params = list(brain.modules.parameters())
    return {
        "metrics": metrics,
        "routing": result.routing,
        "trainable_parameters": sum(p.numel() for p in params if p.requires_grad),
        "parameters": sum(p.numel() for p in params),
        "seconds": round(seconds, 1),
        "output_folder": str(brain.hparams.output_folder),
    }


def chance_levels(tasks, scorer_options: Mapping) -> Dict[str, float]:
    """The accuracy of guessing, for the tasks scored over a label set."""
    chance = {}
    for name in tasks:
        task = get_task(name)
        labels = {**task.scorer_options, **scorer_options.get(name, {})}.get("labels")
        if labels:
            chance[name] = 100.0 / len(labels)
    return chance


def comparison_table(results: Dict[str, Dict], tasks, chance: Dict[str, float]) -> List[str]:
    """Markdown lines: one row per metric, one column per family."""
    families = list(results)
    lines = [
        "| task | metric | " + " | ".join(families) + " | chance |",
        "|---|---|" + "---:|" * (len(families) + 1),
    ]
    for task in tasks:
        for metric in get_task(task).metrics:
            cells = [f"{results[f]['metrics'][task][metric.name]:.2f}" for f in families]
            level = chance.get(task) if metric.name in ("WA", "UA") else None
            cells.append("" if level is None else f"{level:.2f}")
            lines.append(f"| {task} | {metric.reading} | " + " | ".join(cells) + " |")
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
    tasks = settings["tasks"]
    results = {}
    for family in settings["compare_families"]:
        began = time.time()
        brain = train.main(others + [f"--model_family={family}"], prepare=False)
        results[family] = family_summary(brain, tasks, time.time() - began)
    chance = chance_levels(tasks, settings["scorer_options"])

    lines = ["# MoWE vs base-only on the synthetic tasks (test split)", ""]
    lines += comparison_table(results, tasks, chance)
    for family, result in results.items():
        if result["routing"]:
            lines += ["", f"Weak encoders chosen per task ({family}, test split):"]
            lines += [
                f"- {task}: " + ", ".join(f"{e} {s:.0f}%" for e, s in shares.items())
                for task, shares in result["routing"].items()
            ]
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
