"""Evaluation refuses to report on a set it could not evaluate at all."""

import pytest

from speechbrain_mowe.dataio import EmptyBatch, UnreadableAudio
from speechbrain_mowe.training import Evaluation, NothingToEvaluate


def test_a_set_with_no_usable_example_is_an_error_naming_why():
    evaluation = Evaluation(["0:a"])
    evaluation.skipped.add(EmptyBatch([UnreadableAudio("x", "/data/x.wav", "file not found")]))
    with pytest.raises(NothingToEvaluate) as error:
        evaluation.finish("test-clean")
    assert str(error.value) == (
        "The test-clean set has no example that could be evaluated: 1 clips skipped "
        "(1 x file not found), e.g. /data/x.wav (file not found)"
    )


def test_an_empty_set_is_an_error():
    with pytest.raises(NothingToEvaluate, match="The valid set .*: it is empty"):
        Evaluation([]).finish("valid")
