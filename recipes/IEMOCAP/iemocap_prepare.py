"""IEMOCAP -> emotion recognition manifests, leave-one-session-out.

Reads the release as distributed: turns in
``Session<k>/sentences/wav/<dialog>/<turn>.wav`` and their labels in
``Session<k>/dialog/EmoEvaluation/<dialog>.txt``, whose summary lines read
``[start - end] <tab> turn <tab> label <tab> [V, A, D]``. Any subset of the
five sessions works (macOS ``._*`` files are ignored).

For each test session ``k`` it writes ``<save_folder>/fold_<k>/{train,valid,test}.csv``:
test is session ``k``, valid a seeded ``valid_ratio`` share of the other
sessions' turns, train the rest. Labels are mapped by a label set (the
standard 4-class one merges ``exc`` into happy); turns whose label is outside
the set are not examples, and their counts are logged.
"""

import logging
import re
from collections import Counter
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Union

import numpy as np

from speechbrain_mowe.dataio import (
    Preparation,
    manifest_row,
    run_from_command_line,
)
from speechbrain_mowe.tasks import TASKS, example_rng

logger = logging.getLogger(__name__)

#: Every IEMOCAP category code and the word a model answers for it.
EMOTIONS = {
    "neu": "neutral",
    "hap": "happy",
    "exc": "excited",
    "ang": "angry",
    "sad": "sad",
    "fru": "frustrated",
    "fea": "fearful",
    "sur": "surprised",
    "dis": "disgusted",
}
#: IEMOCAP label code -> answer word, per label set.
LABEL_SETS = {
    "4class": {**{c: EMOTIONS[c] for c in ("neu", "hap", "ang", "sad")}, "exc": "happy"},
    "4class_no_exc": {c: EMOTIONS[c] for c in ("neu", "hap", "ang", "sad")},
    "6class": {c: EMOTIONS[c] for c in ("neu", "hap", "exc", "ang", "sad", "fru")},
    "9class": dict(EMOTIONS),
}

_SUMMARY = re.compile(r"^\[\s*([\d.]+)\s*-\s*([\d.]+)\s*\]\s+(\S+)\s+(\S+)\s+\[([^\]]*)\]")
_SESSION = re.compile(r"^Session([1-5])$")


def prepare_iemocap(
    data_folder: str,
    save_folder: str,
    test_sessions: Optional[Sequence[int]] = None,
    label_set: Union[str, Mapping[str, str]] = "4class",
    valid_ratio: float = 0.1,
    skip_prep: bool = False,
    seed: int = 0,
    min_duration: float = 0.0,
    verify_audio: bool = False,
):
    """Writes train/valid/test manifests for each leave-one-session-out fold.

    Arguments
    ---------
    data_folder : str
        The IEMOCAP folder holding ``Session1`` ... ``Session5`` (any subset).
    save_folder : str
        Where the fold folders and the preparation report go.
    test_sessions : sequence of int, optional
        Sessions held out, one fold each (default: every session found).
    label_set : str or mapping
        A name in ``LABEL_SETS`` or a mapping from IEMOCAP label codes
        (``neu``, ``exc``, ...) to answer words.
    valid_ratio : float
        Share of the training sessions' turns used for validation.
    skip_prep : bool
        Do nothing (the manifests are known to exist).
    seed : int
        Seeds the validation split and the instruction paraphrases.
    min_duration : float
        Turns shorter than this (s) are left out and reported.
    verify_audio : bool
        Decode every file to check it and measure it, instead of reading its
        header only (slower; catches damaged and truncated files).

    Returns
    -------
    dict
        ``fold_<k>/<split>`` -> number of rows (None when ``skip_prep``).
    """
    if skip_prep:
        return None
    labels = _label_map(label_set)
    data_folder = Path(data_folder)
    found = sorted(
        int(match.group(1))
        for path in (data_folder.iterdir() if data_folder.is_dir() else ())
        if (match := _SESSION.match(path.name)) and path.is_dir()
    )
    if not found:
        raise FileNotFoundError(f"No Session1..Session5 folders in '{data_folder}'")
    test_sessions = list(found if test_sessions is None else test_sessions)
    absent = sorted(set(test_sessions) - set(found))
    if absent:
        raise ValueError(f"Test sessions {absent} are not in '{data_folder}' (found {found})")
    if len(found) < 2:
        raise ValueError(
            f"Leave-one-session-out needs at least 2 sessions; '{data_folder}' has only {found}"
        )
    if not 0 <= valid_ratio < 1:
        raise ValueError(f"valid_ratio must be in [0, 1), got {valid_ratio}")
    options = dict(
        data_folder=data_folder,
        sessions=found,
        test_sessions=test_sessions,
        labels=labels,
        valid_ratio=valid_ratio,
        seed=seed,
    )
    manifests = {
        f"fold_{k}/{split}": f"fold_{k}/{split}.csv"
        for k in test_sessions
        for split in ("train", "valid", "test")
    }
    prep = Preparation("iemocap", save_folder, options, manifests, min_duration, verify_audio)
    if prep.is_done():
        return prep.counts

    answers = ", ".join(dict.fromkeys(labels.values()))
    turns = {k: _session_turns(data_folder, k, labels, prep) for k in found}
    for k in test_sessions:
        train = [turn for s in found if s != k for turn in turns[s]]
        n_valid = round(valid_ratio * len(train))
        valid_ids = set(np.random.default_rng([seed, k]).permutation(len(train))[:n_valid].tolist())
        splits = {
            "train": [t for i, t in enumerate(train) if i not in valid_ids],
            "valid": [t for i, t in enumerate(train) if i in valid_ids],
            "test": turns[k],
        }
        for split, split_turns in splits.items():
            rows = []
            for turn in split_turns:
                rng = example_rng(seed, turn["id"]) if split == "train" else None
                rows.append(
                    manifest_row(
                        turn["id"],
                        turn["wav"],
                        data_folder,
                        turn["duration"],
                        task="er",
                        instruction=TASKS["er"].instruction(rng, labels=answers),
                        answer=labels[turn["code"]],
                        dataset="iemocap",
                        speaker=turn["speaker"],
                        session=turn["session"],
                        emotion_code=turn["code"],
                    )
                )
            prep.write(f"fold_{k}/{split}", rows)
    return prep.finish()


def _label_map(label_set) -> Dict[str, str]:
    if isinstance(label_set, str):
        if label_set not in LABEL_SETS:
            raise KeyError(f"Unknown label set '{label_set}'. Known: {', '.join(LABEL_SETS)}")
        return dict(LABEL_SETS[label_set])
    if not label_set:
        raise ValueError("The label set is empty")
    return dict(label_set)


def _session_turns(
    data_folder: Path, session: int, labels: Mapping[str, str], prep: Preparation
) -> List[dict]:
    """The labelled turns of one session whose label is in ``labels``."""
    root = data_folder / f"Session{session}"
    evaluations = sorted(
        p for p in (root / "dialog" / "EmoEvaluation").glob("*.txt") if not p.name.startswith(".")
    )
    if not evaluations:
        raise FileNotFoundError(f"No EmoEvaluation files in '{root / 'dialog' / 'EmoEvaluation'}'")
    turns, excluded = [], Counter()
    for evaluation in evaluations:
        with open(evaluation, encoding="utf-8-sig", errors="replace") as f:
            for line in f:
                match = _SUMMARY.match(line)
                if match is None:
                    continue
                turn, code = match.group(3), match.group(4)
                if code not in labels:
                    excluded[code] += 1
                    continue
                wav = root / "sentences" / "wav" / evaluation.stem / f"{turn}.wav"
                info = prep.check_audio(f"Session{session}", turn, wav)
                if info is None:
                    continue
                turns.append(
                    {
                        "id": turn,
                        "wav": wav,
                        "duration": info.duration,
                        "code": code,
                        "speaker": turn[:5] + turn.rsplit("_", 1)[1][0],
                        "session": session,
                    }
                )
    if excluded:
        logger.info(
            "IEMOCAP Session%d: %d turns have labels outside the label set (%s)",
            session,
            sum(excluded.values()),
            ", ".join(f"{code}: {n}" for code, n in sorted(excluded.items())),
        )
    return turns


if __name__ == "__main__":
    run_from_command_line(prepare_iemocap)
