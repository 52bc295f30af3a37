"""mmal: balanced active learning for multimodal classifiers.

The pipeline has three stages that talk only through files owned by
:mod:`mmal.cache`: ``train`` fits a model on a round's labeled index file,
``extract`` writes the round's HDF5 feature cache, ``select`` reads the cache
and writes an index file of the samples to label next.
"""

__version__ = "0.3.0"
