"""Lobes: encoders, routers, the MoWE encoder, projectors and the AudioLLM."""
