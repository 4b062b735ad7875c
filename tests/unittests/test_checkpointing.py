"""CrashSafeCheckpointer: what an interrupted write or deletion leaves behind is
never loaded and is named in a warning; the checkpoint recovery chooses loads,
or is an error naming it, never silently another; meta data reads back."""

import logging
import re
import shutil
import time

import numpy as np
import pytest
import torch
from speechbrain.utils.epoch_loop import EpochCounter

from speechbrain_mowe.checkpointing import CheckpointError, CrashSafeCheckpointer, written_whole


def _checkpointer(folder, value):
    layer = torch.nn.Linear(2, 2)
    torch.nn.init.constant_(layer.weight, value)
    counter = EpochCounter(10)
    return CrashSafeCheckpointer(folder, {"layer": layer, "counter": counter}), layer


def _two_checkpoints(folder):
    """An older checkpoint of weights 1.0, and a newer one of weights 2.0."""
    checkpointer, layer = _checkpointer(folder, 1.0)
    older = checkpointer.save_checkpoint()
    time.sleep(0.01)
    torch.nn.init.constant_(layer.weight, 2.0)
    newer = checkpointer.save_checkpoint()
    return older, newer


def _recovered_weight(folder):
    checkpointer, layer = _checkpointer(folder, 0.0)
    checkpoint = checkpointer.recover_if_possible()
    return checkpoint, layer.weight[0, 0].item()


def test_a_checkpoint_is_written_under_a_hidden_name_and_renamed_whole(tmp_path, monkeypatch):
    checkpointer, _ = _checkpointer(tmp_path, 1.0)
    seen = []
    monkeypatch.setattr(checkpointer, "_save_checkpoint_metafile",
                        lambda path, *a: seen.append(sorted(p.name for p in tmp_path.iterdir()))
                        or {"unixtime": 0, "end-of-epoch": True})  # fmt: skip
    saved = checkpointer.save_checkpoint()
    (writing,) = seen[0]  # while writing, only the hidden folder exists
    assert writing == ".writing-" + saved.path.name
    assert [p.name for p in tmp_path.iterdir()] == [saved.path.name]
    assert sorted(saved.paramfiles) == ["counter", "layer"]
    assert all(path.parent == saved.path for path in saved.paramfiles.values())


TRUNCATED = (lambda ckpt: (ckpt / "CKPT.yaml").write_text(""), "its CKPT.yaml is truncated")
UNREADABLE = (
    lambda ckpt: (ckpt / "CKPT.yaml").write_bytes(b"unixtime: [1,"),
    "its CKPT.yaml does not read",
)


@pytest.mark.parametrize("damage, reason", [TRUNCATED, UNREADABLE])
def test_a_checkpoint_whose_meta_does_not_read_is_an_error_naming_it(tmp_path, damage, reason):
    older, newer = _two_checkpoints(tmp_path)
    damage(older.path)  # not even the newest: which one recovery would choose is unknown
    with pytest.raises(CheckpointError) as error:
        _recovered_weight(tmp_path)
    assert str(error.value).startswith(f"The checkpoint {older.path} cannot be listed: {reason}")
    assert "\n" not in str(error.value)


def test_the_chosen_checkpoint_lacking_a_recoverable_is_an_error_not_another_one(tmp_path):
    older, newer = _two_checkpoints(tmp_path)
    (newer.path / "layer.ckpt").unlink()
    named = f"The checkpoint {re.escape(str(newer.path))} has no file for " + r"\['layer'\]"
    with pytest.raises(CheckpointError, match=named):
        _recovered_weight(tmp_path)


def test_a_checkpoint_chosen_by_a_key_loads_or_raises(tmp_path):
    """SpeechBrain's own case: a recoverable added after the oldest checkpoint,
    which an importance key then chooses."""
    layer, counter = torch.nn.Linear(2, 2), EpochCounter(10)
    checkpointer = CrashSafeCheckpointer(tmp_path, {"layer": layer})
    oldest = checkpointer.save_checkpoint(meta={"age": 2})
    checkpointer.add_recoverable("counter", counter)
    checkpointer.save_checkpoint(meta={"age": 1})
    named = re.escape(f"{oldest.path} has no file for ['counter']")
    with pytest.raises(CheckpointError, match=named):
        checkpointer.recover_if_possible(importance_key=lambda ckpt: ckpt.meta["age"])
    assert checkpointer.recover_if_possible(min_key="age").meta["age"] == 1


def test_a_checkpoint_whose_file_fails_to_load_is_an_error_naming_it(tmp_path):
    older, newer = _two_checkpoints(tmp_path)
    data = (newer.path / "layer.ckpt").read_bytes()
    (newer.path / "layer.ckpt").write_bytes(data[: len(data) // 2])  # damaged after writing
    named = re.escape(f"The checkpoint {newer.path} that recovery chose does not load")
    with pytest.raises(CheckpointError, match=named):
        _recovered_weight(tmp_path)
    assert newer.path.exists() and older.path.exists()  # nothing deleted


def test_meta_holding_tensors_reads_back_and_chooses_the_checkpoint(tmp_path):
    checkpointer, layer = _checkpointer(tmp_path, 1.0)
    best = checkpointer.save_checkpoint(meta={"loss": torch.tensor(0.5), "wer": np.float64(3.0)})
    torch.nn.init.constant_(layer.weight, 2.0)
    checkpointer.save_checkpoint(meta={"loss": torch.tensor(0.75), "wer": np.float64(2.0)})
    checkpointer, layer = _checkpointer(tmp_path, 0.0)
    recovered = checkpointer.recover_if_possible(min_key="loss")
    assert recovered.path == best.path and recovered.meta["loss"] == 0.5
    assert layer.weight[0, 0].item() == 1.0
    assert checkpointer.recover_if_possible(min_key="wer").meta["wer"] == 2.0


def test_meta_that_cannot_read_back_is_refused_before_anything_is_written(tmp_path):
    checkpointer, _ = _checkpointer(tmp_path, 1.0)
    with pytest.raises(TypeError, match="The checkpoint meta 'extra.model' is a Linear"):
        checkpointer.save_checkpoint(meta={"extra": {"model": torch.nn.Linear(1, 1)}})
    assert list(tmp_path.iterdir()) == []


def test_remains_of_interrupted_writes_and_deletions_are_ignored_then_removed(tmp_path, caplog):
    older, _ = _two_checkpoints(tmp_path)
    for name in (".writing-CKPT+2030-01-01+00-00-00+00", ".deleting-CKPT+2000-01-01+00-00-00+00"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "CKPT.yaml").write_text("unixtime: 1.0e+10\nend-of-epoch: true\n")
    with caplog.at_level(logging.WARNING):
        checkpointer, layer = _checkpointer(tmp_path, 0.0)
        assert checkpointer.recover_if_possible() is not None
    assert layer.weight[0, 0].item() == 2.0
    assert caplog.text.count("whose writing or deletion was interrupted") == 2
    checkpointer.save_and_keep_only(num_to_keep=1)
    assert len(list(tmp_path.iterdir())) == 1
    assert not older.path.exists()


def test_an_old_checkpoint_is_renamed_away_before_it_is_removed(tmp_path, monkeypatch):
    older, newer = _two_checkpoints(tmp_path)
    removed = []
    rmtree = shutil.rmtree
    monkeypatch.setattr(shutil, "rmtree", lambda path, **kw: (removed.append(path.name),
                                                              rmtree(path, **kw)))  # fmt: skip
    checkpointer, _ = _checkpointer(tmp_path, 3.0)
    checkpointer.delete_checkpoints(num_to_keep=1)
    assert removed[0] == ".deleting-" + older.path.name
    assert [p.name for p in tmp_path.iterdir()] == [newer.path.name]


def test_a_file_written_whole_keeps_the_previous_one_until_the_new_one_is_complete(tmp_path):
    path = tmp_path / "inference.yaml"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with written_whole(path) as temporary:
            temporary.write_text("half of the ne")
            raise RuntimeError("killed")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == [path.name]
    with written_whole(path) as temporary:
        temporary.write_text("new")
    assert path.read_text() == "new"
