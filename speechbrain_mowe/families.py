"""Model families: HyperPyYAML files that build a :class:`~speechbrain_mowe.model.MoWEAudioLLM`.

The families ship with the package (``speechbrain_mowe/hparams/``, which a
checkout also shows as the top-level ``hparams/``): ``tiny_mowe``,
``mowe_paper``, ``base_only``, ``salmonn_like``, ``wavllm_like``,
``conv_mowe``, ``conv_base_only``, ``whisper_mowe`` and
``whisper_base_only`` (:func:`family_names` lists them); any other YAML file
of the same shape is a family too. A family's top-level keys are of three kinds:

- **sources**, ``!PLACEHOLDER`` model paths (``whisper_source``,
  ``llm_source``, ...), given as ``sources``;
- **settings**, plain values (``tasks``, ``weak_dim``, ``top_k``,
  ``long_audio``, ...), overridden with ``settings``;
- the objects built from them, ending with ``model``.

:func:`load_family` records on the model how it was built
(:class:`FamilySpec`, ``model.built_from``): the family file's text, the
sources it used, the tasks and the value of every setting. The inference
folder a training run writes keeps all of it, so it rebuilds exactly the
trained model, whichever file or command line the settings came from, even
after the family file is edited or the package upgraded.
"""

import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from hyperpyyaml import load_hyperpyyaml
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from speechbrain_mowe.model import MoWEAudioLLM

#: Where the model families (``<name>.yaml``) are installed.
FAMILIES_FOLDER = Path(__file__).resolve().parent / "hparams"
#: Keys of earlier versions and what replaced them.
RENAMED = {
    "long_input": "the setting long_audio (refuse | chunk)",
    "num_tasks": "tasks, the router's task ids (in the recipe's `tasks`)",
}


@dataclass(frozen=True)
class FamilySpec:
    """How a model was built from a family: enough to build it again.

    Arguments
    ---------
    family : str
        A family name, or the absolute path of a family file.
    text : str
        The family file as it was when the model was built.
    sources : dict
        The family's model paths; local paths absolute.
    tasks : tuple of str
        The router's task ids, in order.
    settings : dict
        The value of every setting of the family (but ``tasks``).
    """

    family: str
    text: str
    sources: Dict[str, Any] = field(default_factory=dict)
    tasks: Tuple[str, ...] = ()
    settings: Dict[str, Any] = field(default_factory=dict)


def family_path(name: str) -> Path:
    """The YAML file of a model family: a name of an installed family or a path.

    Example
    -------
    >>> family_path("tiny_mowe").name
    'tiny_mowe.yaml'
    """
    path = Path(name)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise FileNotFoundError(f"Model family file {path} does not exist")
        return path
    path = FAMILIES_FOLDER / f"{name}.yaml"
    if not path.is_file():
        raise FileNotFoundError(
            f"Unknown model family '{name}'. Known families: {', '.join(family_names())} "
            "(or give the path of a .yaml file)"
        )
    return path


def family_names() -> List[str]:
    """The installed families.

    Example
    -------
    >>> {"tiny_mowe", "mowe_paper", "base_only"} <= set(family_names())
    True
    """
    return sorted(p.stem for p in FAMILIES_FOLDER.glob("*.yaml"))


def family_keys(text: str) -> Tuple[List[str], List[str]]:
    """The sources (``!PLACEHOLDER`` keys) and settings (plain values) of a family's YAML.

    Example
    -------
    >>> sources, settings = family_keys(family_path("tiny_mowe").read_text())
    >>> sources, "top_k" in settings, "router" in settings
    (['whisper_source', 'llm_source'], True, False)
    """
    top = YAML().load(io.StringIO(text)) or {}
    sources, settings = [], []
    for key, value in top.items():
        tag = getattr(getattr(value, "tag", None), "value", None)
        if tag == "!PLACEHOLDER":
            sources.append(key)
        elif tag is None and _plain(value):
            settings.append(key)
    return sources, settings


def _plain(value) -> bool:
    """A value without HyperPyYAML tags (a setting, not an object)."""
    if getattr(getattr(value, "tag", None), "value", None) is not None:
        return False
    if isinstance(value, CommentedMap):
        return all(_plain(v) for v in value.values())
    if isinstance(value, CommentedSeq):
        return all(_plain(v) for v in value)
    return True


def _local_path(value):
    """An existing local path made absolute; anything else (a hub name) as is."""
    if isinstance(value, (str, os.PathLike)) and Path(value).exists():
        return str(Path(value).resolve())
    return value


def load_family(
    name: str,
    sources: Optional[Mapping[str, Any]] = None,
    tasks: Optional[Sequence[str]] = None,
    settings: Optional[Mapping[str, Any]] = None,
    text: Optional[str] = None,
    merged_lora: bool = False,
    **more_settings,
) -> MoWEAudioLLM:
    """Builds the model of a family.

    Arguments
    ---------
    name : str
        An installed family (see :func:`family_names`) or a YAML path.
    sources : mapping, optional
        Values of the family's ``!PLACEHOLDER`` model paths; keys the family
        does not use are ignored, so one mapping can serve several families
        (but a key that is one of its settings is refused).
    tasks : sequence of str, optional
        The router's task ids, in order (default: the family's ``tasks``).
    settings : mapping, optional
        Values of the family's settings (``top_k``, ``weak_dim``, ...); an
        unknown key is an error naming the family's settings.
    text : str, optional
        The family's YAML itself, as an inference folder keeps it; ``name``
        then only names it in messages.
    merged_lora : bool
        The ``llm_source`` already holds the LoRA weights merged in (a merged
        inference folder, :func:`speechbrain_mowe.deployment.export_merged`):
        the new, zero-initialised adapters are removed.
    **more_settings
        More settings, as keyword arguments (as a YAML ``!apply:`` gives them).

    Returns
    -------
    MoWEAudioLLM
        The model, with ``built_from`` recording the family's text, the
        sources it used, the tasks and every setting's value.

    Example
    -------
    >>> import tempfile
    >>> from speechbrain_mowe.tiny import make_tiny_llm, make_tiny_whisper
    >>> tmp = tempfile.mkdtemp()
    >>> sources = {"whisper_source": make_tiny_whisper(f"{tmp}/whisper"),
    ...            "llm_source": make_tiny_llm(f"{tmp}/llm"), "hubert_source": "unused"}
    >>> model = load_family("tiny_mowe", sources, tasks=["asr", "er"], top_k=2)
    >>> model.mowe_encoder.router.top_k, model.tasks, sorted(model.built_from.sources)
    (2, ['asr', 'er'], ['llm_source', 'whisper_source'])
    >>> {key: model.built_from.settings[key] for key in ("weak_dim", "top_k", "long_audio")}
    {'weak_dim': 32, 'top_k': 2, 'long_audio': 'refuse'}
    >>> load_family("tiny_mowe", sources, topk=2)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
     ...
    ValueError: Model family 'tiny_mowe' has no setting 'topk'; its settings are: tasks, ...
    """
    where = "its recorded text"
    if text is None:
        path = family_path(name)
        text, where = path.read_text(encoding="utf-8"), str(path)
    source_keys, setting_keys = family_keys(text)
    settings = {**(settings or {}), **more_settings}
    sources = dict(sources or {})
    for key in {**sources, **settings}:
        if key in RENAMED:
            raise ValueError(f"'{key}' is no longer a key of model families: use {RENAMED[key]}")
    for key in settings:
        if key not in setting_keys:
            raise ValueError(
                f"Model family '{name}' has no setting '{key}'; its settings are: "
                f"{', '.join(setting_keys)} ({where})"
            )
    for key in sources:
        if key in setting_keys:
            raise ValueError(
                f"'{key}' is a setting of model family '{name}', not a model path: give it in "
                f'the model settings (--model_settings="{{{key}: ...}}"), not in model_sources'
            )
    used = {key: _local_path(value) for key, value in sources.items() if key in source_keys}
    overrides = {**used, **settings}
    if tasks is not None:
        overrides["tasks"] = list(tasks)
    try:
        hparams = load_hyperpyyaml(text, overrides)
    except ValueError as err:
        if "!PLACEHOLDER" not in str(err):
            raise
        raise ValueError(
            f"Model family '{name}' ({where}): {err} Give it in the recipe's `model_sources`, "
            f'e.g. --model_sources="{{key: /path/or/hub-name, ...}}"'
        ) from None
    model = hparams["model"]
    if not isinstance(model, MoWEAudioLLM):
        raise TypeError(f"Model family '{name}' ({where}): `model` is not a MoWEAudioLLM")
    family = name if Path(name).suffix not in (".yaml", ".yml") else str(Path(name).resolve())
    values = {key: hparams[key] for key in setting_keys if key != "tasks"}
    model.built_from = FamilySpec(family, text, used, tuple(model.tasks), values)
    if merged_lora:
        model.llm.merge_lora()  # adds zero: the adapters are new
    return model
