"""The root of every error this project raises on purpose.

It lives in ``schemas`` (the bottom layer, importing nothing of ours) so that
``schemas.SchemaError`` can derive from it too; everyone else imports it from
``commer_core.errors``.
"""

from __future__ import annotations


class CommerError(Exception):
    """An expected failure with a message fit for the user: bad input, a missing or
    altered artifact, an incompatible model. The CLI prints it as one ``Error:`` line.

    Each domain subclasses it, usually together with the built-in its callers already
    catch (``class StoreError(CommerError, ValueError)``), so ``except ValueError``
    keeps working.
    """
