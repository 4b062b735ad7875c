"""speechbrain-mowe: multi-task audio LLMs with a Mixture of Weak Encoders, for SpeechBrain."""

__version__ = "0.1.0"
