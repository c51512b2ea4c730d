"""Concept prompts ("find every instance of X", SAM 3's promptable concept segmentation) as the services take
them: the rules every route follows, so the map, plain-image and Azure paths agree.

- A concept is a text phrase, exemplar boxes (label 1 = "more like this", 0 = "not like this"), or both; it is
  found with `Engine.find` on the same embedding (and so the same cache entry) a click on that image/window uses.
- A request holds either concept prompts or click prompts (points/boxes), never both: they ask different
  questions (every instance vs. one object), so a mix is refused (422 naming the prompts) rather than guessed at.
- At most one text phrase per request (SAM 3 takes one noun phrase per query), 1–`MAX_TEXT_CHARS` characters,
  not only spaces, no control characters; leading/trailing spaces are not part of the phrase.
- `score_threshold` in [0, 1] (default `DEFAULT_SCORE_THRESHOLD`, the default of SAM 3's own processors:
  `Sam3Processor(confidence_threshold=0.5)` in facebookresearch/sam3 and `post_process_instance_segmentation(
  threshold=0.5)` in transformers' SAM3 docs, huggingface.co/docs/transformers/model_doc/sam3).
- A model without the capability a concept needs ("text", "exemplars") is refused with `MissingCapability`
  (422) naming it, before any tile or image is read.
- Answers: one mask per instance, best score first; `concept_label` names the concept in answers.
"""

from __future__ import annotations

import math
import unicodedata

from samgis.engine.protocol import ConceptPrompt, ModelCard, require
from samgis.errors import InvalidRequest

MAX_TEXT_CHARS = 200
"""Longest text phrase accepted. SAM 3 reads a short noun phrase: its text encoder takes at most 32 tokens
(transformers' Sam3Processor tokenizer, model_max_length 32), which 200 characters of ordinary words exceed."""

DEFAULT_SCORE_THRESHOLD = 0.5
EXEMPLAR_LABEL = "exemplar"
"""`concept` of an answer to exemplar boxes without text."""


def check_text(value, field: str) -> str:
    """The phrase of a text prompt, stripped; InvalidRequest(`field`) unless it is a string of 1–`MAX_TEXT_CHARS`
    characters with a visible one and no control characters."""
    if not isinstance(value, str):
        raise InvalidRequest(field, f"expected a text phrase (a string), got {type(value).__name__}")
    if len(value) > MAX_TEXT_CHARS:
        raise InvalidRequest(field, f"{len(value)} characters; a concept is a short noun phrase of at most "
                                    f"{MAX_TEXT_CHARS} characters")
    text = value.strip()
    if not text:
        raise InvalidRequest(field, "empty: give a noun phrase such as \"greenhouse\"")
    if any(unicodedata.category(c) == "Cc" for c in text):
        raise InvalidRequest(field, "control characters (newlines, tabs …) are not allowed in a phrase")
    return text


def check_score_threshold(value, field: str = "score_threshold") -> float:
    """`value` as a float in [0, 1] (None: the default); InvalidRequest(`field`) otherwise."""
    if value is None:
        return DEFAULT_SCORE_THRESHOLD
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or not 0.0 <= value <= 1.0:
        raise InvalidRequest(field, f"must be a number in [0, 1], got {value!r}")
    return float(value)


def concept_label(concept: ConceptPrompt) -> str:
    """The `concept` property of answers: the phrase, or "exemplar" for exemplar boxes alone."""
    return concept.text or EXEMPLAR_LABEL


def require_concept(card: ModelCard, concept: ConceptPrompt, text_field: str, exemplar_field: str) -> None:
    """Refuse (MissingCapability, 422) a concept the model cannot find, naming the capability ("text",
    "exemplars") and the field that asked for it."""
    if concept.text:
        require(card, ["text"], text_field)
    if len(concept.boxes):
        require(card, ["exemplars"], exemplar_field)


def exemplar_counts(concept: ConceptPrompt) -> dict:
    """{"positive": n, "negative": n} exemplar boxes of `concept`."""
    pos = int((concept.labels == 1).sum())
    return {"positive": pos, "negative": int(len(concept.labels) - pos)}
