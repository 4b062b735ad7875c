"""A synthetic multi-task corpus, generated offline and deterministically.

Real synthesized speech (eSpeak NG, many voices) and procedurally generated
sounds, made from nothing but a seed, so that recipes, tokenizers and models
can be trained and evaluated end to end where no dataset can be downloaded.
Tasks, ``<size>`` examples each per split:

asr
    English sentences of a small grammar (``the small dog sees a red ball in
    the garden today``; a few dozen words, see :mod:`synthetic_grammar`), spoken by
    random voices: five English accents, seven male and five female voice
    variants, random speaking rate, pitch, pitch range and volume. The answer
    is the sentence, lowercase, without punctuation.
ast
    The same kind of speech, answered with the grammar's exact German
    translation, with gender and case agreement and German word order
    (``the small dog sees a red ball in the garden today`` -> ``der kleine
    Hund sieht heute einen roten Ball im Garten``). Rows carry
    ``source_language``, ``target_language`` and the English ``transcript``.
er
    "Emotions" ``neutral``, ``happy``, ``angry``, ``sad`` made of prosody
    alone: each label has its own ranges of speaking rate, pitch, pitch range
    and loudness (:data:`EMOTION_PROSODY`), separated from the other labels'
    and jittered within, and the voice and the sentence are drawn
    independently of the label. The words never tell the label, so a model
    must listen to how things are said, not to what is said, which is the
    skill emotion recognition needs and the one a text-only shortcut cannot
    fake. Loudness is part of the label, so these clips are never
    normalised.
aac
    Scenes of one to three sound events in a row (high or low steady tones,
    rising or falling chirps, noise bursts, one to three clicks) with random
    timing, frequencies and levels over faint background noise. Each clip
    has five paraphrased captions naming the events in order and the number
    of clicks (``a low tone followed by two clicks``), all in ``references``;
    ``answer`` is one of them, drawn per example.
speaker_sex
    Only when listed in ``tasks``: ``man`` or ``woman``, after the voice
    variant. This script registers the task with one call (scored like
    emotions, by accuracy over the labels ``man`` and ``woman``), so
    importing it is all a recipe needs to train and test it.

Splits share no sentence: each sentence of the grammar belongs to one split by
a hash of the seed and its text (:func:`sentence_split`), and the training
sentences are drawn so that every word of the valid and test sentences
(and, for ``ast``, every German word form of their translations) occurs in
training. Everything is drawn from generators seeded by the seed and the
task, split or example id: the same arguments give byte-identical files.

Speech rows also carry ``speaker`` (the eSpeak voice, e.g. ``en-us+f3``),
``sex``, ``transcript`` and the eSpeak settings ``rate``, ``pitch``,
``pitch_range``, ``volume``; captioning rows carry ``events``.

Files written to ``save_folder``::

    wavs/<split>/<task>/<id>.wav     16 kHz mono 16-bit PCM
    <task>_<split>.csv               manifests, e.g. asr_train.csv, er_test.csv
    synthetic_prepare.json           options and counts
    synthetic_prepare_report.tsv     rows left out (none)

Usage::

    python synthetic_prepare.py --save_folder data/synthetic --tasks asr ast er aac speaker_sex
"""

import contextlib
import hashlib
import logging
import random
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Set, Tuple

import torch
from synthetic_grammar import Sentence, english_words, german_words, random_sentence
from synthetic_scenes import (
    EVENT_PHRASES,
    all_captions,
    captions,
    random_scene,
    render_scene,
    scene_description,
)
from synthetic_speech import ACCENTS, VARIANTS, Voice, speak
from tqdm import tqdm

from speechbrain_mowe.dataio import (
    SAMPLE_RATE,
    Preparation,
    manifest_row,
    run_from_command_line,
    save_audio,
)
from speechbrain_mowe.metrics import LabelScorer
from speechbrain_mowe.tasks import Metric, Task, example_rng, get_task, register_task

logger = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
#: Every task this corpus can hold.
TASK_NAMES = ("asr", "ast", "er", "aac", "speaker_sex")
DEFAULT_TASKS = ("asr", "ast", "er", "aac")
#: Tasks whose clips are speech, in the order their training sentences are drawn
#: (``ast`` first: only its training sentences can cover German word forms).
SPEECH_TASKS = ("ast", "asr", "er", "speaker_sex")
EMOTION_LABELS = ("neutral", "happy", "angry", "sad")
SEX_LABELS = ("man", "woman")
#: Share of the sentences of the grammar that belong to each of valid and test.
EVAL_SHARE = 0.1
#: Candidates compared when a training sentence is drawn while some valid/test
#: words are not yet in training; the one covering the most of them is kept.
COVERAGE_CANDIDATES = 20

#: eSpeak settings, (lowest, highest), per emotion: rate (words per minute),
#: pitch and pitch range (0-99) and volume (linear amplitude, 100 = eSpeak's
#: default). Any two labels are apart in at least two of them.
EMOTION_PROSODY = {
    "neutral": {"rate": (160, 180), "pitch": (42, 52), "pitch_range": (35, 50), "volume": (45, 55)},
    "happy": {"rate": (195, 215), "pitch": (68, 80), "pitch_range": (75, 90), "volume": (60, 70)},
    "angry": {"rate": (182, 194), "pitch": (55, 63), "pitch_range": (85, 99), "volume": (80, 90)},
    "sad": {"rate": (115, 135), "pitch": (18, 30), "pitch_range": (5, 15), "volume": (22, 30)},
}
#: Where a clip may peak at most: just under full scale.
MAX_PEAK = 0.99
#: eSpeak settings of the other speech tasks.
PROSODY = {"rate": (140, 210), "pitch": (35, 65), "pitch_range": (30, 80), "volume": (45, 80)}

SPEAKER_SEX = register_task(
    Task(
        "speaker_sex",
        (
            "Is the speaker a man or a woman?",
            "Say whether a man or a woman is speaking.",
            "Who is talking, a man or a woman?",
            "Does this voice belong to a man or a woman?",
        ),
        scorer=LabelScorer,
        scorer_options={"labels": list(SEX_LABELS)},
        join=None,
        shortcut="classify_speaker_sex_file",
        metrics=(Metric("WA", higher_is_better=True, label="accuracy %"),),
    )
)


def limit_peak(wav: torch.Tensor, peak: float = MAX_PEAK) -> torch.Tensor:
    """``wav`` scaled down to peak at ``peak`` if it goes beyond it, else unchanged.

    Example
    -------
    >>> limit_peak(torch.tensor([0.5, -1.2])).tolist()
    [0.4124999940395355, -0.9900000095367432]
    >>> limit_peak(torch.tensor([0.5, -0.2])).tolist()
    [0.5, -0.20000000298023224]
    """
    top = wav.abs().max()
    return wav * (peak / top) if top > peak else wav


def prepare_synthetic(
    save_folder: str,
    train_size: int = 400,
    valid_size: int = 40,
    test_size: int = 100,
    tasks: Sequence[str] = DEFAULT_TASKS,
    seed: int = 1986,
    skip_prep: bool = False,
) -> Optional[Dict[str, int]]:
    """Generates the clips and writes one manifest per task and split.

    Arguments
    ---------
    save_folder : str
        Where the audio, the manifests and the preparation record go; it is
        the ``$data_root`` of the manifests.
    train_size, valid_size, test_size : int
        Examples per task in each split.
    tasks : sequence of str
        Among ``asr``, ``ast``, ``er``, ``aac``, ``speaker_sex``.
    seed : int
        Everything generated follows from it.
    skip_prep : bool
        Do nothing (the manifests are known to exist).

    Returns
    -------
    dict
        ``<task>_<split>`` -> number of rows (None when ``skip_prep``).

    Example
    -------
    >>> folder = getfixture("tmp_path")
    >>> counts = prepare_synthetic(folder, train_size=8, valid_size=2, test_size=2,
    ...                            tasks=["asr", "aac"])
    >>> counts
    {'asr_train': 8, 'asr_valid': 2, 'asr_test': 2, 'aac_train': 8, 'aac_valid': 2, 'aac_test': 2}
    >>> from speechbrain_mowe.dataio import load_manifest
    >>> row = load_manifest(folder / "asr_test.csv", folder)["synthetic_asr_test_00000"]
    >>> row["answer"], row["speaker"], row["instruction"]
    ('this old man sees this box', 'en+f2', 'Transcribe the speech.')
    """
    if skip_prep:
        return None
    tasks = _check_tasks(tasks)
    sizes = {"train": train_size, "valid": valid_size, "test": test_size}
    negative = {split: size for split, size in sizes.items() if size < 0}
    if negative:
        raise ValueError(f"Sizes must not be negative, got {negative}")
    manifests = {f"{task}_{split}": f"{task}_{split}.csv" for task in tasks for split in SPLITS}
    prep = Preparation(
        "synthetic", save_folder, dict(tasks=tasks, sizes=sizes, seed=seed), manifests
    )
    if prep.is_done():
        return prep.counts

    save_folder = Path(save_folder)
    sentences = _plan_sentences(tasks, sizes, seed)
    for task in tasks:
        for split in SPLITS:
            for old in (save_folder / "wavs" / split / task).glob("synthetic_*.wav"):
                old.unlink()
    started, seconds = time.perf_counter(), 0.0
    total = len(tasks) * sum(sizes.values())
    with _one_thread(), tqdm(total=total, desc="Synthetic corpus", unit="clip") as bar:
        for task in tasks:
            for split in SPLITS:
                labels = _balanced_labels(task, split, sizes[split], seed)
                spoken = sentences.get((task, split))
                rows = []
                for index in range(sizes[split]):
                    sentence = spoken[index] if spoken else None
                    label = labels[index] if labels else None
                    rows.append(_example(save_folder, task, split, index, sentence, label, seed))
                    seconds += float(rows[-1]["duration"])
                    bar.update()
                prep.write(f"{task}_{split}", rows)
    logger.info(
        "Synthetic corpus: %d clips, %.1f min of audio, made in %.1f s (%s)",
        total,
        seconds / 60,
        time.perf_counter() - started,
        "; ".join(
            f"{task}: " + ", ".join(f"{split} {sizes[split]}" for split in SPLITS) for task in tasks
        ),
    )
    return prep.finish()


def corpus_texts(tasks: Sequence[str] = DEFAULT_TASKS) -> List[str]:
    """Text a tokenizer for the corpus of ``tasks`` should be trained on.

    Every word form of the grammar (English for the speech tasks, German for
    ``ast``), every caption phrase and template (``aac``), the labels (``er``,
    ``speaker_sex``) and every instruction of the tasks, the evaluation ones
    included, as the manifests write them.

    Example
    -------
    >>> texts = corpus_texts(["ast", "er"])
    >>> texts[1].split()[:6]
    ['der', 'den', 'die', 'das', 'ein', 'einen']
    >>> "Translate the English speech into German." in texts
    True
    >>> texts[2]
    'neutral happy angry sad'
    """
    tasks = _check_tasks(tasks)
    texts = []
    if any(task in SPEECH_TASKS for task in tasks):
        texts.append(" ".join(english_words()))
    if "ast" in tasks:
        texts.append(" ".join(german_words()))
    if "aac" in tasks:
        texts.extend(phrase for phrases in EVENT_PHRASES.values() for phrase in phrases)
        texts.extend(text for filled in all_captions().values() for text in filled)
    if "er" in tasks:
        texts.append(" ".join(EMOTION_LABELS))
    if "speaker_sex" in tasks:
        texts.append(" ".join(SEX_LABELS))
    for name in tasks:
        texts.extend(get_task(name).all_instructions(**_instruction_fields(name)))
    return list(dict.fromkeys(texts))


def sentence_split(english: str, seed: int) -> str:
    """The split an English sentence belongs to, after a hash of the seed and the text.

    Example
    -------
    >>> [sentence_split(text, 1986) for text in ("the dog sees a ball", "a child watches my boat")]
    ['train', 'test']
    """
    digest = hashlib.sha256(f"{seed}/{english}".encode()).digest()
    share = int.from_bytes(digest[:8], "big") / 2**64
    return "test" if share < EVAL_SHARE else "valid" if share < 2 * EVAL_SHARE else "train"


@contextlib.contextmanager
def _one_thread():
    """Runs torch on one thread: on clips this short, synchronising threads
    costs more than it saves (many times more on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _check_tasks(tasks: Sequence[str]) -> List[str]:
    """``tasks`` in the order of :data:`TASK_NAMES`, each once; ValueError for unknown ones."""
    unknown = [task for task in tasks if task not in TASK_NAMES]
    if unknown:
        raise ValueError(f"Unknown tasks {unknown}; the tasks are {list(TASK_NAMES)}")
    if not tasks:
        raise ValueError(f"No tasks given; the tasks are {list(TASK_NAMES)}")
    return [task for task in TASK_NAMES if task in tasks]


def _instruction_fields(task: str) -> Dict[str, str]:
    if task == "ast":
        return {"source_language": "en", "target_language": "de"}
    if task == "er":
        return {"labels": ", ".join(EMOTION_LABELS)}
    return {}


def _items(sentence: Sentence, task: str) -> Set[Tuple[str, str]]:
    """The words a clip of ``task`` speaking ``sentence`` shows: ``(language, word)``."""
    items = {("en", word) for word in sentence.english.split()}
    if task == "ast":
        items.update(("de", word) for word in sentence.german.split())
    return items


def _plan_sentences(
    tasks: Sequence[str], sizes: Dict[str, int], seed: int
) -> Dict[Tuple[str, str], List[Sentence]]:
    """The sentences of every speech task and split, valid and test first, then
    training sentences covering their words."""
    speech = [task for task in SPEECH_TASKS if task in tasks]
    plan, needed = {}, set()
    for split in ("valid", "test"):
        for task in speech:
            plan[task, split] = _draw_sentences(task, split, sizes[split], seed, set())
            needed.update(item for sentence in plan[task, split] for item in _items(sentence, task))
    for task in speech:
        plan[task, "train"] = _draw_sentences(task, "train", sizes["train"], seed, needed)
    if needed:
        missing = ", ".join(f"{word} ({language})" for language, word in sorted(needed))
        raise ValueError(
            f"train_size={sizes['train']} is too small for every word of the valid and test "
            f"sentences to occur in training; never in training: {missing}"
        )
    return plan


def _draw_sentences(
    task: str, split: str, count: int, seed: int, needed: Set[Tuple[str, str]]
) -> List[Sentence]:
    """``count`` distinct sentences of ``split``, preferring ones that show
    words still ``needed`` (which it removes from ``needed`` once shown)."""
    rng = random.Random(f"{seed}/{task}/{split}/sentences")
    drawn, seen = [], set()
    while len(drawn) < count:
        wanted = {item for item in needed if task == "ast" or item[0] == "en"}
        candidates = []
        while len(candidates) < (COVERAGE_CANDIDATES if wanted else 1):
            sentence = random_sentence(rng)
            if sentence.english not in seen and sentence_split(sentence.english, seed) == split:
                candidates.append(sentence)
        best = max(candidates, key=lambda sentence: len(_items(sentence, task) & wanted))
        drawn.append(best)
        seen.add(best.english)
        needed -= _items(best, task)
    return drawn


def _balanced_labels(task: str, split: str, count: int, seed: int) -> Optional[List[str]]:
    """Equally many of each label (up to one), in a seeded random order."""
    labels = {"er": EMOTION_LABELS, "speaker_sex": SEX_LABELS}.get(task)
    if labels is None:
        return None
    drawn = [labels[index % len(labels)] for index in range(count)]
    random.Random(f"{seed}/{task}/{split}/labels").shuffle(drawn)
    return drawn


def _voice(rng: random.Random, sex: str, prosody: Dict[str, Tuple[int, int]]) -> Voice:
    settings = {name: rng.randint(low, high) for name, (low, high) in prosody.items()}
    return Voice(rng.choice(ACCENTS), rng.choice(VARIANTS[sex]), **settings)


def _example(
    save_folder: Path,
    task: str,
    split: str,
    index: int,
    sentence: Optional[Sentence],
    label: Optional[str],
    seed: int,
) -> Dict[str, str]:
    """Generates and writes one clip; returns its manifest row."""
    utt_id = f"synthetic_{task}_{split}_{index:05d}"
    content = random.Random(f"{seed}/{utt_id}/content")
    rng = example_rng(seed, utt_id)
    instruction = get_task(task).instruction(
        rng if split == "train" else None, **_instruction_fields(task)
    )
    if task == "aac":
        events = random_scene(content)
        wav = render_scene(events, content)
        references = captions(events, content)
        answer = rng.choice(references)
        extra = {"events": scene_description(events)}
    else:
        sex = label if task == "speaker_sex" else content.choice(SEX_LABELS)
        voice = _voice(content, sex, EMOTION_PROSODY[label] if task == "er" else PROSODY)
        wav = speak(sentence.english, voice, seed=content.getrandbits(31))
        references = None
        answer = {"asr": sentence.english, "ast": sentence.german}.get(task, label)
        extra = {"speaker": voice.name, "sex": voice.sex, "transcript": sentence.english}
        if task == "ast":
            extra.update(source_language="en", target_language="de")
        extra.update(
            rate=voice.rate, pitch=voice.pitch, pitch_range=voice.pitch_range, volume=voice.volume
        )
    path = save_folder / "wavs" / split / task / f"{utt_id}.wav"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_audio(path, limit_peak(wav), SAMPLE_RATE)
    return manifest_row(
        utt_id,
        path,
        save_folder,
        len(wav) / SAMPLE_RATE,
        task=task,
        instruction=instruction,
        answer=answer,
        references=references,
        dataset="synthetic",
        **extra,
    )


if __name__ == "__main__":
    run_from_command_line(prepare_synthetic)
