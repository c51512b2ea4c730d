"""SAM backends, model registry and weights, embedding cache."""

from samgis.engine.protocol import DecodeResult, Embedding, Engine, ModelCard, Prompts

__all__ = ["DecodeResult", "Embedding", "Engine", "ModelCard", "Prompts"]
