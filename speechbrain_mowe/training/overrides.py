"""Command-line overrides checked against the recipe YAML before anything is built.

SpeechBrain hands ``--key=value`` overrides to HyperPyYAML as they are, so
``--lr=abc`` only fails inside torch once the model is built, and
``--number_of_epochs=`` (an empty value) deep inside the epoch loop. Here each
override of a key whose value in the YAML is a plain boolean, number, string,
list or mapping must be of that kind, and a key the YAML does not
have is named in a warning (it is still added, as SpeechBrain does).
Values written with a tag (``!ref``, ``!new:``...) or null in the YAML are
not checked.
"""

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
