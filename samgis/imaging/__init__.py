"""Images and masks: decoding, codecs and pictures (no model, no HTTP)."""
