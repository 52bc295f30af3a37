"""Feature extraction: a round's model over the whole pool into the cache (``mmal extract``)."""

from mmal.extract.run import batch_fields, extract_round

__all__ = ["batch_fields", "extract_round"]
