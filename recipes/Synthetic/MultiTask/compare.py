#!/usr/bin/env python3
"""Several systems and seeds trained on the same synthetic tasks, compared.

Runs ``train.py`` once per system of ``compare_systems`` (names of
``systems``: a model family and its settings) and per training seed of
``compare_seeds``, with everything
else equal: the same corpus, pre-trained encoders and initial LLM (all from
``experiment_seed``), the same epochs, batches and settings; the frozen
encoders' features are computed once and shared through the feature cache.
Then it reports, on the test split, each task's metrics per system (mean and
standard deviation over the seeds), each system's paired difference to the
first system (per seed, then mean and standard deviation), the weak encoders
each task chose, each classification task's accuracy beside linear probes of
the frozen encoders (``compare_probe``: the base, the best weak encoder, the
base with it), and the wall times; and writes them to
``<experiment_folder>/comparison.md``, ``comparison.json`` and a figure,
``comparison.png`` (metrics with their spread, routing shares). The trained
models stay in ``<experiment_folder>/<system>/seed_<seed>/`` and load with
``PretrainedAudioLLM.from_hparams(source=...)``.

To run::

    python compare.py hparams/mowe.yaml       # base-only vs MoWE, one seed
    python compare.py hparams/mowe.yaml \
        "--compare_systems=[base_only,pool_no_router,mowe_independent,mowe_dependent,mowe_hybrid]" \
        "--compare_seeds=[1,2,3]"               # the full table
    python compare.py hparams/conv.yaml       # the fast configuration
"""

import json
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

from speechbrain.utils.distributed import run_on_main

from speechbrain_mowe.errors import run_main
from speechbrain_mowe.probe import SPLITS, family_encoders, probe_encoders, read_clips
from speechbrain_mowe.tasks import get_task
from speechbrain_mowe.training import setup_experiment

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train  # noqa: E402


def run_summary(brain, tasks: Sequence[str], seconds: float) -> Dict:
    """One trained model: test metrics (``{task: {metric: value}}``, the metrics
    each task reports), routing shares, sizes and training time."""
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
        "seconds": round(seconds, 1),
        "output_folder": str(brain.hparams.output_folder),
    }


def spread(values: Sequence[float]) -> Dict[str, Optional[float]]:
    """Mean and sample standard deviation (None with one value).

    Example
    -------
    >>> spread([1.0, 2.0, 3.0])
    {'mean': 2.0, 'std': 1.0, 'n': 3}
    """
    std = statistics.stdev(values) if len(values) > 1 else None
    return {"mean": statistics.fmean(values), "std": std, "n": len(values)}


def aggregate(runs: Mapping[str, Mapping[int, Dict]], tasks: Sequence[str]) -> Dict:
    """Per system and metric: the spread over seeds, and the paired difference
    (same seed) to the first system."""
    reference = next(iter(runs))
    summary = {}
    for system, by_seed in runs.items():
        seeds = sorted(by_seed)
        metrics, differences = {}, {}
        for task in tasks:
            for metric in get_task(task).metrics:
                values = [by_seed[s]["metrics"][task][metric.name] for s in seeds]
                metrics[f"{task}/{metric.name}"] = spread(values)
                paired = [value - runs[reference][s]["metrics"][task][metric.name]
                          for value, s in zip(values, seeds)]  # fmt: skip
                differences[f"{task}/{metric.name}"] = spread(paired)
        routing = {}
        for task in by_seed[seeds[0]]["routing"]:
            experts = by_seed[seeds[0]]["routing"][task]
            routing[task] = {
                e: statistics.fmean(by_seed[s]["routing"][task][e] for s in seeds) for e in experts
            }
        summary[system] = {
            "metrics": metrics,
            "difference_to_" + reference: differences,
            "routing": routing,
            "seeds": seeds,
            "trainable_parameters": by_seed[seeds[0]]["trainable_parameters"],
            "seconds_per_run": statistics.fmean(by_seed[s]["seconds"] for s in seeds),
        }
    return summary


def _cell(value: Mapping, signed: bool = False) -> str:
    text = f"{value['mean']:+.2f}" if signed else f"{value['mean']:.2f}"
    return text if value["std"] is None else f"{text} ± {value['std']:.2f}"


def chance_levels(tasks, scorer_options: Mapping) -> Dict[str, float]:
    """The accuracy of guessing, for the tasks scored over a label set."""
    chance = {}
    for name in tasks:
        task = get_task(name)
        labels = {**task.scorer_options, **scorer_options.get(name, {})}.get("labels")
        if labels:
            chance[name] = 100.0 / len(labels)
    return chance


def comparison_tables(summary: Dict, tasks, chance: Mapping[str, float]) -> List[str]:
    """Markdown: the metrics (mean ± std), then the paired differences to the first system."""
    systems = list(summary)
    reference = systems[0]
    header = "| task | metric | " + " | ".join(systems) + " | chance |"
    lines = [header, "|---|---|" + "---:|" * (len(systems) + 1)]
    rows = [(task, m) for task in tasks for m in get_task(task).metrics]
    for task, metric in rows:
        key = f"{task}/{metric.name}"
        cells = [_cell(summary[s]["metrics"][key]) for s in systems]
        level = chance.get(task) if metric.name in ("WA", "UA") else None
        cells.append("" if level is None else f"{level:.2f}")
        lines.append(f"| {task} | {metric.reading} | " + " | ".join(cells) + " |")
    for label, key in (("trainable parameters", "trainable_parameters"),
                       ("training + test s per run", "seconds_per_run")):  # fmt: skip
        cells = [f"{summary[s][key]:.0f}" for s in systems]
        lines.append(f"| | {label} | " + " | ".join(cells) + " | |")
    others = systems[1:]
    lines += ["", f"Paired difference to {reference} (same seed; then mean ± std over seeds):", ""]
    lines += ["| task | metric | " + " | ".join(others) + " |", "|---|---|" + "---:|" * len(others)]
    for task, metric in rows:
        key = f"{task}/{metric.name}"
        differences = [summary[s][f"difference_to_{reference}"][key] for s in others]
        cells = [_cell(d, signed=True) for d in differences]
        lines.append(f"| {task} | {metric.reading} | " + " | ".join(cells) + " |")
    return lines


def probe_ceilings(settings: Dict, run_opts: Dict, families: Sequence[str], tasks) -> Dict:
    """Linear probes (:mod:`speechbrain_mowe.probe`) of the frozen encoders of
    ``families`` (the base, then each pool's weak encoders; a name two families
    share is probed once) on the corpus's ``tasks``: what a model reading those
    features could tell, beside what the trained systems answer. The features
    come from the training's feature cache, the clips from the manifests the
    systems were trained, validated and tested on."""
    sources = train.model_sources(settings, run_opts)
    encoders = {}
    for family in dict.fromkeys(families):
        for name, encoder in family_encoders(family, sources, frozen_only=True).items():
            encoders.setdefault(name, encoder)
    manifests = dict(zip(SPLITS, (settings["train_data"], settings["valid_data"],
                                  settings["test_data"]["test"])))  # fmt: skip
    clips = {
        task: {split: read_clips(manifests[split][task], settings["data_root"]) for split in SPLITS}
        for task in tasks
    }
    cache = settings["feature_cache_folder"] if settings.get("cache_features") else None
    base = "base" if "base" in encoders else None
    return probe_encoders(encoders, clips, base, cache_folder=cache, device=run_opts["device"])


def ceiling_table(probes: Mapping, summary: Mapping) -> List[str]:
    """Markdown: each probed task's accuracy per system beside its probe
    ceilings: the base, the best weak encoder and the best base + weak encoder.

    Example
    -------
    >>> probes = {"tasks": {"er": {"chance": 25.0, "probes": {
    ...     "base": {"test": 70.0}, "0:A": {"test": 90.0}, "1:B": {"test": 60.0},
    ...     "base+0:A": {"test": 95.0}, "base+1:B": {"test": 72.0}}}}}
    >>> summary = {"base_only": {"metrics": {"er/WA": {"mean": 50.0, "std": None}}}}
    >>> print("\\n".join(ceiling_table(probes, summary)))
    | task | chance | base_only | probe: base | probe: best weak | probe: base + best weak |
    |---|---:|---:|---:|---:|---:|
    | er | 25.0 | 50.00 | 70.0 | 90.0 (0:A) | 95.0 (0:A) |
    """
    systems = list(summary)
    lines = [
        "| task | chance | " + " | ".join(systems) + " | probe: base | probe: best weak"
        " | probe: base + best weak |",
        "|---|---:|" + "---:|" * (len(systems) + 3),
    ]
    for task, result in probes["tasks"].items():
        accuracy = {name: probe["test"] for name, probe in result["probes"].items()}
        weak = {
            name: value for name, value in accuracy.items() if "+" not in name and name != "base"
        }
        joint = {
            name[len("base+") :]: value
            for name, value in accuracy.items()
            if name.startswith("base+")
        }
        cells = [_cell(summary[s]["metrics"][f"{task}/WA"]) for s in systems]
        cells.append(f"{accuracy['base']:.1f}" if "base" in accuracy else "")
        for best in (weak, joint):
            name = max(best, key=best.get) if best else None
            cells.append(f"{best[name]:.1f} ({name})" if name else "")
        lines.append(f"| {task} | {result['chance']:.1f} | " + " | ".join(cells) + " |")
    return lines


def plot(summary: Dict, tasks, chance: Mapping[str, float], path: Path) -> None:
    """Each task's headline metric per system (mean, error bar: the std over
    seeds), and the routing shares per task of each routed system."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    systems = list(summary)
    routed = [s for s in systems if summary[s]["routing"]]
    columns = max(len(tasks), len(routed), 1)
    figure, axes = pyplot.subplots(2 if routed else 1, columns, squeeze=False,
                                   figsize=(3.2 * columns, 6.4 if routed else 3.4))  # fmt: skip
    colours = pyplot.get_cmap("tab10").colors
    for ax, task in zip(axes[0], tasks):
        metric = get_task(task).metrics[0]
        values = [summary[s]["metrics"][f"{task}/{metric.name}"] for s in systems]
        errors = [0.0 if v["std"] is None else v["std"] for v in values]
        ax.bar(range(len(systems)), [v["mean"] for v in values], yerr=errors, capsize=3,
               color=colours[: len(systems)])  # fmt: skip
        if task in chance and metric.name in ("WA", "UA"):
            ax.axhline(chance[task], color="grey", linestyle="--", linewidth=1, label="chance")
            ax.legend(fontsize=7)
        ax.set_title(f"{task}: {metric.reading}", fontsize=8)
        ax.set_xticks(range(len(systems)), systems, rotation=45, ha="right", fontsize=7)
    for ax in axes[0][len(tasks) :]:
        ax.axis("off")
    if routed:
        for ax, system in zip(axes[1], routed):
            routing = summary[system]["routing"]
            shown = [task for task in tasks if task in routing]
            bottom = [0.0] * len(shown)
            for e, expert in enumerate(routing[shown[0]]):
                shares = [routing[task][expert] for task in shown]
                ax.bar(shown, shares, bottom=bottom, color=colours[e % 10], label=expert)
                bottom = [b + x for b, x in zip(bottom, shares)]
            ax.set_title(f"{system}: weak encoder chosen, % of clips", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.legend(fontsize=6)
        for ax in axes[1][len(routed) :]:
            ax.axis("off")
    seeds = summary[systems[0]]["seeds"]
    figure.suptitle(f"Test split, seeds {seeds} (error bars: std over seeds)", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    pyplot.close(figure)


def main(argv):
    """Trains every system of ``compare_systems`` with every seed of
    ``compare_seeds``, and compares them."""
    start = time.time()
    settings, run_opts, _ = setup_experiment(argv, folder_key="experiment_folder")
    unknown = [name for name in settings["compare_systems"] if name not in settings["systems"]]
    if unknown:
        raise ValueError(
            f"compare_systems names {unknown}, not in systems {list(settings['systems'])}"
        )
    # The corpus, encoders and LLM the systems share are made once, first.
    families = [settings["systems"][name]["family"] for name in settings["compare_systems"]]
    run_on_main(train.prepare_experiment, args=[settings, run_opts], kwargs={"families": families})
    prepared = time.time() - start
    ignored = ("--model_family", "--model_settings", "--seed", "--system", "--output_folder")
    others = [arg for arg in argv if not arg.startswith(ignored)]
    tasks, seeds = settings["tasks"], list(settings["compare_seeds"])
    runs: Dict[str, Dict[int, Dict]] = {}
    for system in settings["compare_systems"]:
        spec = settings["systems"][system]
        for seed in seeds:
            began = time.time()
            brain = train.main(
                others + [f"--system={system}", f"--model_family={spec['family']}",
                          f"--model_settings={json.dumps(spec.get('settings') or {})}",
                          f"--seed={seed}"],
                prepare=False,
            )  # fmt: skip
            runs.setdefault(system, {})[seed] = run_summary(brain, tasks, time.time() - began)
    summary = aggregate(runs, tasks)
    chance = chance_levels(tasks, settings["scorer_options"])
    folder = Path(settings["experiment_folder"])

    lines = [
        "# MoWE and other front ends on the synthetic tasks (test split)",
        "",
        f"Systems: {', '.join(f'{s} ({spec}' for s, spec in _described(settings))}.",
        f"Training seeds: {seeds}; corpus, encoders and LLM from experiment seed "
        f"{settings['experiment_seed']}.",
        "",
    ]
    lines += comparison_tables(summary, tasks, chance)
    probes = None
    if settings.get("compare_probe", True) and chance:
        probes = probe_ceilings(settings, run_opts, families, list(chance))
        lines += ["", "Accuracy % beside linear probes of the frozen encoders (test split):", ""]
        lines += ceiling_table(probes, summary)
    for system, result in summary.items():
        if result["routing"]:
            lines += ["", f"Weak encoders chosen per task ({system}, test split, mean over seeds):"]
            lines += [
                f"- {task}: " + ", ".join(f"{e} {share:.0f}%" for e, share in shares.items())
                for task, shares in result["routing"].items()
            ]
    total = time.time() - start
    lines += [
        "",
        f"Corpus, encoders and LLM: {prepared:.0f} s",
        f"Total wall time: {total / 60:.1f} min ({total:.0f} s)",
        f"Figure: {folder / 'comparison.png'}",
    ]
    report = "\n".join(lines)
    plot(summary, tasks, chance, folder / "comparison.png")
    print(report)
    (folder / "comparison.md").write_text(report + "\n", encoding="utf-8")
    with open(folder / "comparison.json", "w", encoding="utf-8") as f:
        data = {
            "systems": summary,
            "runs": runs,
            "chance": chance,
            "seeds": seeds,
            "probes": probes,
        }
        json.dump({**data, "preparation_seconds": prepared, "seconds": total}, f, indent=2)
    return summary


def _described(settings):
    for system in settings["compare_systems"]:
        spec = settings["systems"][system]
        extra = spec.get("settings") or {}
        described = ", ".join(f"{k}={v}" for k, v in extra.items())
        yield system, spec["family"] + (f": {described})" if described else ")")


if __name__ == "__main__":
    run_main(main, sys.argv[1:])
