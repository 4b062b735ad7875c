"""Training: the Brain, its epoch tallies and evaluation, the recipes' shared steps."""

from speechbrain_mowe.training.brain import MoWEBrain, UnusableTrainingData
from speechbrain_mowe.training.evaluation import (
    Evaluation,
    EvaluationResult,
    NothingToEvaluate,
    ScoreGroup,
    read_result,
)
from speechbrain_mowe.training.experiment import (
    ExperimentData,
    add_recipe_folder,
    build_model,
    check_data,
    dataio_prepare,
    manifest_paths,
    setup_experiment,
    split_manifests,
    task_manifests,
    train_and_evaluate,
)
from speechbrain_mowe.training.tally import EpochTally

__all__ = [
    "MoWEBrain",
    "UnusableTrainingData",
    "Evaluation",
    "EvaluationResult",
    "NothingToEvaluate",
    "ScoreGroup",
    "read_result",
    "ExperimentData",
    "add_recipe_folder",
    "build_model",
    "check_data",
    "dataio_prepare",
    "manifest_paths",
    "setup_experiment",
    "split_manifests",
    "task_manifests",
    "train_and_evaluate",
    "EpochTally",
]
