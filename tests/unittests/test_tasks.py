"""Tasks: instructions, scorers and their options, registration, joins of long files."""

import pytest

from speechbrain_mowe import tasks as tasks_module
from speechbrain_mowe.metrics import (
    ASRScorer,
    CaptionScorer,
    LabelScorer,
    Scorer,
    TranslationScorer,
)
from speechbrain_mowe.tasks import (
    TASKS,
    Metric,
    Task,
    example_rng,
    get_task,
    join_answers,
    register_task,
    resolve,
)


class ExactMatch(Scorer):
    """A scorer a recipe might bring along: share of answers equal to the reference."""

    def __init__(self, case_sensitive=True):
        super().__init__()
        self.case_sensitive = case_sensitive
        self.hits = []

    def _add(self, ids, hypotheses, references):
        fold = (lambda t: t) if self.case_sensitive else str.lower
        self.hits.extend(fold(h) == fold(r) for h, r in zip(hypotheses, references))

    def _summarize(self):
        return {"accuracy": 100.0 * sum(self.hits) / len(self.hits)}

    def summary_lines(self):
        return [f"accuracy: {self.summarize()['accuracy']:.1f}"]


@pytest.fixture
def registry(monkeypatch):
    """The task registry, restored after the test."""
    monkeypatch.setattr(tasks_module, "TASKS", dict(TASKS))
    return tasks_module


def test_builtin_tasks_have_paraphrases_and_a_fixed_eval_instruction():
    for name in ("asr", "ast", "er", "aac"):
        task = get_task(name)
        assert len(task.instructions) >= 4
        assert len(set(task.instructions)) == len(task.instructions)
        assert task.eval_instruction == task.instructions[0]
        assert task.metrics and task.shortcut.endswith("_file")
    assert TASKS["ast"].fields == ("source_language", "target_language")
    assert TASKS["er"].instruction(labels="neutral, sad") == (
        "Which emotion does the speaker express? Answer with one of: neutral, sad."
    )
    assert (
        TASKS["ast"].instruction(source_language="zh-CN", target_language="en")
        == "Translate the Chinese speech into English."
    )


def test_paraphrase_choice_depends_only_on_seed_and_id():
    ids = [f"utt{i}" for i in range(200)]
    first = [TASKS["asr"].instruction(example_rng(3, i)) for i in ids]
    again = [TASKS["asr"].instruction(example_rng(3, i)) for i in reversed(ids)][::-1]
    other_seed = [TASKS["asr"].instruction(example_rng(4, i)) for i in ids]
    assert first == again
    assert first != other_seed
    assert set(first) == set(TASKS["asr"].instructions)  # every paraphrase is used


def test_missing_template_values_and_unknown_tasks_are_named():
    with pytest.raises(KeyError, match=r"Task 'ast' needs values for \['target_language'\]"):
        TASKS["ast"].instruction(source_language="en")
    with pytest.raises(KeyError, match="Unknown task 'sid'. Known tasks: aac, asr, ast, er"):
        get_task("sid")
    with pytest.raises(ValueError, match="at least one instruction"):
        Task("empty", (), scorer=ExactMatch)


def test_each_task_makes_its_scorer_with_its_options():
    scorer = TASKS["ast"].make_scorer(target_language="zh-CN")
    assert isinstance(scorer, TranslationScorer) and scorer.tokenizer == "zh"
    assert isinstance(TASKS["asr"].make_scorer(), ASRScorer)
    labels = TASKS["er"].make_scorer(labels=["happy", "sad"])
    assert isinstance(labels, LabelScorer) and labels.labels == ["happy", "sad"]
    assert isinstance(TASKS["aac"].make_scorer(), CaptionScorer)
    assert TASKS["ast"].option_columns == ("target_language",)
    # Single and multiple references.
    assert TASKS["asr"].reference("hello", ["ignored"]) == "hello"
    assert TASKS["aac"].reference("rain", ["rain", "it rains"]) == ["rain", "it rains"]
    assert TASKS["aac"].reference("rain", []) == ["rain"]


def test_a_task_with_its_own_scorer_and_options_is_one_call(registry):
    task = registry.register_task(
        Task(
            "yes_no",
            ("Is there speech?",),
            scorer=ExactMatch,
            scorer_options={"case_sensitive": False},
            join=None,
            shortcut="detect_speech_file",
            metrics=(Metric("accuracy", higher_is_better=True),),
        )
    )
    assert registry.get_task("yes_no") is task
    scorer = task.make_scorer()
    scorer.append(["a", "b"], ["Yes", "no"], ["yes", "yes"])
    assert scorer.summarize() == {"accuracy": 50.0}
    assert task.make_scorer(case_sensitive=True).case_sensitive  # a recipe's option wins


def test_registering_the_same_task_twice_is_harmless(registry):
    def build():
        # A script imported and then run as __main__ defines its scorer twice.
        class Scores(ExactMatch):
            pass

        return Task("kws", ("Which keyword?",), scorer=Scores, join=None)

    first = registry.register_task(build())
    assert registry.register_task(build()) is first
    assert register_task(Task("asr", TASKS["asr"].instructions, **_settings("asr"))) is TASKS["asr"]
    with pytest.raises(ValueError, match="different task named 'kws' is already registered"):
        registry.register_task(Task("kws", ("Another?",), scorer=ExactMatch))
    other = registry.register_task(Task("kws", ("Another?",), scorer=ExactMatch), replace=True)
    assert registry.get_task("kws") is other


def _settings(name):
    task = TASKS[name]
    return {"scorer": task.scorer, "shortcut": task.shortcut, "metrics": task.metrics}


def test_a_scorer_that_is_no_scorer_is_named():
    task = Task("bad", ("Say something.",), scorer=dict)
    with pytest.raises(TypeError, match="Task 'bad': its scorer .* made a dict, not a"):
        task.make_scorer()


def test_references_resolve_lazily():
    assert resolve("speechbrain_mowe.metrics.asr:ASRScorer") is ASRScorer
    with pytest.raises(ValueError, match="not a 'module:attribute' reference"):
        resolve("speechbrain_mowe.metrics.asr.ASRScorer")


def test_long_file_answers_join_as_the_task_says():
    seconds = [30.0, 30.0, 10.0]
    assert join_answers(["one two", "", "three"], seconds, TASKS["asr"].join) == "one two three"
    assert join_answers(["a dog barks", "rain"], seconds[:2], TASKS["aac"].join) == (
        "a dog barks; rain"
    )
    assert join_answers(["happy", "sad", "happy"], [10.0, 20.0, 15.0], TASKS["er"].join) == "happy"
    assert join_answers(["", ""], [1.0, 1.0], None) == ""
