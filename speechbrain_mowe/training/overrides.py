"""Command-line overrides checked against the recipe YAML before anything is built.

SpeechBrain hands ``--key=value`` overrides to HyperPyYAML as they are, so
``--lr=abc`` only fails inside torch once the model is built, and
``--number_of_epochs=`` (an empty value) deep inside the epoch loop. Here each
override of a key whose value in the YAML is a plain boolean, number, string,
list or mapping must be of that kind, and a key the YAML does not
have is named in a warning (it is still added, as SpeechBrain does).
Values written with a tag (``!ref``, ``!new:``...) or null in the YAML are
not checked. A mapping given for a key whose YAML value is null
(``--train_weights={asr: 1.0}`` for ``train_weights: null``), which
HyperPyYAML refuses ("The structure of the overrides doesn't match"), is
accepted (:func:`merge_into_null`).
"""

import io
import json
import logging
from pathlib import Path
from typing import Any, List

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

logger = logging.getLogger(__name__)


class OverrideError(ValueError):
    """A command-line override that does not fit the recipe YAML."""


def _tagged(node: Any) -> bool:
    tag = getattr(node, "tag", None)
    return bool(getattr(tag, "value", None))


def _expected(default: Any):
    """What a value must be to replace ``default``: (test, description), or None."""
    if isinstance(default, bool):
        return (lambda v: isinstance(v, bool)), "true or false"
    if isinstance(default, (int, float)):  # YAML writes 400 for a float quantity too
        return (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)), "a number"
    if isinstance(default, str):
        return (lambda v: isinstance(v, str)), "a string"
    if _tagged(default):
        return None
    if isinstance(default, list):
        return (lambda v: isinstance(v, list)), "a list, e.g. [a, b]"
    if isinstance(default, dict):
        return (lambda v: isinstance(v, dict)), "a mapping, e.g. {key: value}"
    return None


def _shown(value: Any) -> str:
    """A value as it would be written on the command line."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ", ".join(map(_shown, value)) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_shown(v)}" for k, v in value.items()) + "}"
    return str(value)


def check_overrides(hparams_file, overrides: str) -> List[str]:
    """Refuses overrides whose value does not fit the key's value in the YAML.

    Arguments
    ---------
    hparams_file : str or Path
        The recipe YAML.
    overrides : str
        The overrides as SpeechBrain's ``parse_arguments`` returns them (YAML).

    Returns
    -------
    list of str
        The overridden keys the YAML does not have (named in a warning).

    Raises
    ------
    OverrideError
        One line: ``--lr=abc: expected a number (mowe.yaml has lr: 0.002)``.

    Example
    -------
    >>> path = getfixture("tmp_path") / "x.yaml"
    >>> _ = path.write_text("lr: 0.001\\nepochs: 5\\nname: !ref <lr>\\n")
    >>> check_overrides(path, "lr: 1e-3\\nname: other\\nextra: 1")
    ['extra']
    >>> try:
    ...     check_overrides(path, "lr: abc")
    ... except OverrideError as error:
    ...     print(error)
    --lr=abc: expected a number (x.yaml has lr: 0.001)
    """
    if not overrides:
        return []
    yaml = YAML()
    try:
        given = yaml.load(overrides) or {}
    except YAMLError as error:
        raise OverrideError(f"The command-line overrides do not read as YAML: {error}") from None
    with open(hparams_file, encoding="utf-8") as f:
        defaults = yaml.load(f) or {}
    unknown = []
    for key, value in given.items():
        if key not in defaults:
            unknown.append(key)
            continue
        default = defaults[key]
        expected = _expected(default)
        if expected is None or _tagged(value):
            continue
        fits, description = expected
        if not fits(value):
            raise OverrideError(
                f"--{key}={_shown(value)}: expected {description} "
                f"({Path(hparams_file).name} has {key}: {_shown(default)})"
            )
    if unknown:
        logger.warning("%s has no key %s: added as given", Path(hparams_file).name, unknown)
    return unknown


def merge_into_null(hparams_file, overrides: str) -> str:
    """``overrides`` with each mapping given for a key whose YAML value is null
    written so that HyperPyYAML takes it (as ``!new:dict [{...}]``; it
    merges a mapping override only into a mapping, and refuses it otherwise).

    Example
    -------
    >>> from hyperpyyaml import load_hyperpyyaml
    >>> path = getfixture("tmp_path") / "x.yaml"
    >>> _ = path.write_text("train_weights: null  # or {task: weight}\\nlr: 0.1\\n")
    >>> overrides = merge_into_null(path, "train_weights: {asr: 1.0}\\nlr: 0.2")
    >>> overrides
    'train_weights: !new:dict [{"asr": 1.0}]\\nlr: 0.2\\n'
    >>> load_hyperpyyaml(path.read_text(), overrides)
    {'train_weights': {'asr': 1.0}, 'lr': 0.2}
    """
    if not overrides:
        return overrides
    yaml = YAML()
    given = yaml.load(overrides) or {}
    with open(hparams_file, encoding="utf-8") as f:
        defaults = yaml.load(f) or {}
    lines = []
    for key, value in given.items():
        if (
            isinstance(value, dict)
            and not _tagged(value)
            and key in defaults
            and (defaults[key] is None)
        ):
            lines.append(f"{key}: !new:dict [{json.dumps(value)}]\n")
        else:
            stream = io.StringIO()
            yaml.dump({key: value}, stream)
            lines.append(stream.getvalue())
    return "".join(lines)
