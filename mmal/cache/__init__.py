"""The files between mmal's stages: the HDF5 feature cache and JSON index files.

``extract`` writes caches with :class:`CacheWriter`; ``select`` reads them with
:func:`open_cache` and writes selections with :func:`write_index`; ``train``
reads labeled sets with :func:`read_index`. See ``docs/cache.md`` and
``docs/index-files.md`` for the formats.
"""

from mmal.cache.index import IndexFile, check_ids_in_cache, read_index, write_index
from mmal.cache.reader import Cache, open_cache
from mmal.cache.schema import SCHEMA_VERSION, CacheMeta
from mmal.cache.writer import CacheWriter, partial_path

__all__ = [
    "SCHEMA_VERSION",
    "Cache",
    "CacheMeta",
    "CacheWriter",
    "IndexFile",
    "check_ids_in_cache",
    "open_cache",
    "partial_path",
    "read_index",
    "write_index",
]
