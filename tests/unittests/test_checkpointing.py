"""CrashSafeCheckpointer: what an interrupted write or deletion leaves behind is
never loaded, is named in a warning, and the newest complete checkpoint loads."""

import logging
import shutil
import time

import pytest
import torch
from speechbrain.utils.epoch_loop import EpochCounter

from speechbrain_mowe.checkpointing import CrashSafeCheckpointer, written_whole


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


@pytest.mark.parametrize("damage, reason", [
    (lambda ckpt: (ckpt / "layer.ckpt").unlink(), "it has no file for ['layer']"),
    (lambda ckpt: (ckpt / "CKPT.yaml").write_text(""), "its CKPT.yaml is truncated"),
    (lambda ckpt: (ckpt / "CKPT.yaml").write_bytes(b"unixtime: [1,"), "does not read"),
])  # fmt: skip
def test_an_incomplete_checkpoint_is_named_and_the_older_one_loads(tmp_path, caplog, damage,
                                                                   reason):  # fmt: skip
    older, newer = _two_checkpoints(tmp_path)
    damage(newer.path)
    with caplog.at_level(logging.WARNING):
        checkpoint, weight = _recovered_weight(tmp_path)
    assert checkpoint.path == older.path and weight == 1.0
    assert f"Ignoring the incomplete checkpoint {newer.path}" in caplog.text
    assert reason in caplog.text


def test_a_checkpoint_that_fails_to_load_is_named_and_the_one_before_loads(tmp_path, caplog):
    older, newer = _two_checkpoints(tmp_path)
    data = (newer.path / "layer.ckpt").read_bytes()
    (newer.path / "layer.ckpt").write_bytes(data[: len(data) // 2])  # truncated by a full disk
    with caplog.at_level(logging.WARNING):
        checkpoint, weight = _recovered_weight(tmp_path)
    assert checkpoint.path == older.path and weight == 1.0
    assert f"The checkpoint {newer.path} does not load" in caplog.text


def test_no_loadable_checkpoint_is_an_error_not_a_fresh_start(tmp_path):
    _, newer = _two_checkpoints(tmp_path)
    for saved in tmp_path.iterdir():
        (saved / "layer.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match="No checkpoint in .* loads"):
        _recovered_weight(tmp_path)
    assert newer.path.exists()  # nothing deleted


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
