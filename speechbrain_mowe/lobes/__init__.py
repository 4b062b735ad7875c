"""Lobes: plain ``nn.Module`` building blocks usable in any SpeechBrain pipeline.

Importing this package registers the built-in encoders by name.
"""

from speechbrain_mowe.lobes.crepe import CrepeEncoder
from speechbrain_mowe.lobes.encoders import (
    ENCODERS,
    AudioEncoder,
    TinyConvEncoder,
    build_encoder,
    load_encoder,
    save_encoder,
)
from speechbrain_mowe.lobes.ge2e import GE2EEncoder
from speechbrain_mowe.lobes.language_model import LanguageModel, LanguageModelOutput
from speechbrain_mowe.lobes.mowe import MoWEEncoder, MoWEOutput
from speechbrain_mowe.lobes.pretrained_encoders import (
    BEATsEncoder,
    HuBERTEncoder,
    SSLEncoder,
    Wav2Vec2Encoder,
    WavLMEncoder,
    WhisperEncoder,
    spec_augment,
)
from speechbrain_mowe.lobes.projectors import (
    FrameStackProjector,
    Projector,
    SequenceCNNProjector,
    WindowQFormerProjector,
)
from speechbrain_mowe.lobes.routers import (
    ROUTER_KINDS,
    DataDependentRouter,
    DataIndependentRouter,
    HybridRouter,
    InstructionRouter,
    Router,
    Routing,
    build_router,
)

__all__ = [
    "ENCODERS",
    "ROUTER_KINDS",
    "AudioEncoder",
    "LanguageModel",
    "LanguageModelOutput",
    "BEATsEncoder",
    "DataDependentRouter",
    "DataIndependentRouter",
    "CrepeEncoder",
    "GE2EEncoder",
    "FrameStackProjector",
    "HuBERTEncoder",
    "HybridRouter",
    "InstructionRouter",
    "MoWEEncoder",
    "MoWEOutput",
    "Projector",
    "Router",
    "Routing",
    "SSLEncoder",
    "SequenceCNNProjector",
    "TinyConvEncoder",
    "Wav2Vec2Encoder",
    "WavLMEncoder",
    "WhisperEncoder",
    "WindowQFormerProjector",
    "build_encoder",
    "build_router",
    "load_encoder",
    "save_encoder",
    "spec_augment",
]
