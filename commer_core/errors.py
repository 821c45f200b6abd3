"""One root for the project's deliberate errors: catch :class:`CommerError` to catch them all.

Every domain keeps its own class next to the code that raises it; each derives from
:class:`CommerError` and from the built-in its callers have always caught:

=====================================  ==========================  =============
class                                  domain                      also a
=====================================  ==========================  =============
``schemas.SchemaError``                corpus schema / rows        ValueError
``commer_core.backbone.BackboneError`` base model resolution/load  RuntimeError
``commer_core.checkpoint.CheckpointError`` checkpoint files        ValueError
``commer_core.store.StoreError``       reading a committed store   ValueError
``commer_core.storage.StorageError``   object-store I/O (fsspec)   OSError
``commer_core.data.DataFormatError``   official dataset files      ValueError
``commer_core.training.TrainingError`` training config / state     ValueError
``commer_core.generator.GenerationError`` a generation input        ValueError
``pipelines.read_corpus.CorpusReadError`` reading input corpora    IOError
``pipelines.compress.CompressError``   the compress job            RuntimeError
``pipelines.commit.CommitError``       committing a store version  RuntimeError
=====================================  ==========================  =============

A new domain adds its class beside its code, derived from :class:`CommerError`; the
CLI (``jobs.errors.cli_errors``) then reports it without a traceback.
"""

from __future__ import annotations

from schemas.errors import CommerError

__all__ = ["CommerError"]
