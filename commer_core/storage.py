"""One storage layer for every read and write outside Beam: fsspec, configured once.

Why: the compress job writes a store through Beam's filesystems, and services, the CLI,
DuckDB and checkpoint loading read it outside Beam. Both must reach the same bucket with
the same settings, so one store needs one configuration. Outside Beam everything goes
through this module: the store reader (:func:`arrow_filesystem`), remote checkpoints
(:func:`download_tree`), the sample corpus, and the commit's compare-and-swap on
``LATEST`` (:func:`read_versioned`, :func:`write_if`).

Where the settings come from (later wins):

1. the backend's own environment: ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``,
   ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION`` ... for ``s3fs`` (botocore);
   ``STORAGE_EMULATOR_HOST``, ``GOOGLE_APPLICATION_CREDENTIALS`` for ``gcsfs``; fsspec's
   ``FSSPEC_<PROTOCOL>_<KEYWORD>`` variables;
2. :func:`configure` with fsspec ``storage_options`` per protocol; the compress job calls
   it with its Beam options mapped by :func:`beam_storage_options` (:data:`BEAM_TO_FSSPEC`).

Backends are optional extras: ``pip install 'commer-pipeline[s3]'`` (s3fs), ``[gcs]``
(gcsfs), ``[azure]`` (adlfs). Local paths need none. Imports no Beam and no torch.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import pyarrow.fs as pafs

from commer_core.errors import CommerError
from commer_core.files import is_local_uri, local_path

#: Beam pipeline option -> (fsspec protocol, keyword path in that protocol's storage_options).
#: ``s3_disable_ssl`` maps to ``use_ssl`` inverted. Beam's GCS filesystem takes its endpoint
#: from ``STORAGE_EMULATOR_HOST`` only, which gcsfs reads too: nothing to map but the project.
BEAM_TO_FSSPEC: dict[str, tuple[str, tuple[str, ...]]] = {
    "s3_endpoint_url": ("s3", ("endpoint_url",)),
    "s3_access_key_id": ("s3", ("key",)),
    "s3_secret_access_key": ("s3", ("secret",)),
    "s3_session_token": ("s3", ("token",)),
    "s3_region_name": ("s3", ("client_kwargs", "region_name")),
    "s3_verify": ("s3", ("client_kwargs", "verify")),
    "s3_disable_ssl": ("s3", ("use_ssl",)),
    "project": ("gs", ("project",)),
}
#: Protocol aliases fsspec knows under one name.
_ALIASES = {"s3a": "s3", "gcs": "gs"}
#: No listing caches by default: a store's LATEST changes under its readers.
_DEFAULTS: dict[str, dict[str, Any]] = {"s3": {"use_listings_cache": False}, "gs": {"cache_timeout": 0}}
#: Environment variables that name an endpoint, per protocol, first match wins (see storage_options).
_ENV_ENDPOINTS: dict[str, tuple[tuple[str, str], ...]] = {
    "s3": (("AWS_ENDPOINT_URL_S3", "endpoint_url"), ("AWS_ENDPOINT_URL", "endpoint_url")),
    "gs": (("STORAGE_EMULATOR_HOST", "endpoint_url"),),
}
_EXTRAS = {"s3": "s3", "gs": "gcs", "abfs": "azure", "az": "azure"}

_configured: dict[str, dict[str, Any]] = {}


class StorageError(CommerError, OSError):
    """A location cannot be reached with the configured storage (backend missing, bad settings)."""


class PreconditionFailed(StorageError):
    """A conditional write found the object changed (or present) since it was read."""


def protocol(uri: str) -> str:
    """``file`` for local paths, else the URI's scheme with fsspec's aliases folded (``s3a`` -> ``s3``)."""
    if is_local_uri(uri):
        return "file"
    scheme = uri.split("://", 1)[0].lower()
    return _ALIASES.get(scheme, scheme)


def configure(options: Mapping[str, Mapping[str, Any]] | None) -> dict[str, dict[str, Any]]:
    """Set the fsspec ``storage_options`` per protocol (``{"s3": {...}, "gs": {...}}``); returns the previous ones.

    Replaces what was configured before (``None`` clears it), so a process that runs
    several jobs against several endpoints gets each job's settings.
    """
    global _configured
    previous = _configured
    _configured = {_ALIASES.get(p, p): dict(v) for p, v in (options or {}).items()}
    return previous


def beam_storage_options(beam_options: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """fsspec ``storage_options`` per protocol from Beam's options (``PipelineOptions.get_all_options()``).

    Only the options in :data:`BEAM_TO_FSSPEC` that are set (not None) are mapped.
    """
    mapped: dict[str, dict[str, Any]] = {}
    for name, (proto, path) in BEAM_TO_FSSPEC.items():
        value = beam_options.get(name)
        if value is None or value is False:
            continue
        if name == "s3_disable_ssl":
            value = False
        target = mapped.setdefault(proto, {})
        for key in path[:-1]:
            target = target.setdefault(key, {})
        target[path[-1]] = value
    return mapped


def storage_options(proto: str) -> dict[str, Any]:
    """The storage_options a ``proto`` filesystem is built with: defaults, environment, :func:`configure`."""
    options: dict[str, Any] = dict(_DEFAULTS.get(proto, {}))
    if proto == "gs" and os.environ.get("STORAGE_EMULATOR_HOST"):
        options["token"] = "anon"  # an emulator takes no credentials; gcsfs would look for Google's
    # The endpoint the environment names is made explicit: fsspec caches filesystems by their
    # options, so a process whose AWS_ENDPOINT_URL / STORAGE_EMULATOR_HOST changed would otherwise
    # be handed the cached client of the old endpoint.
    for name, key in _ENV_ENDPOINTS.get(proto, ()):
        value = os.environ.get(name)
        if value:
            options[key] = value if "://" in value else f"http://{value}"  # an emulator host may omit it
            break
    for key, value in _configured.get(proto, {}).items():
        if isinstance(value, Mapping) and isinstance(options.get(key), Mapping):
            options[key] = {**options[key], **value}
        else:
            options[key] = value
    return options


def filesystem(uri: str) -> tuple[Any, str]:
    """The configured fsspec filesystem for ``uri`` and the path in it (local: absolute, no scheme)."""
    import fsspec

    proto = protocol(uri)
    if proto == "file":
        return fsspec.filesystem("file"), os.path.abspath(local_path(uri))
    try:
        if proto == "gs" and os.environ.get("STORAGE_EMULATOR_HOST"):
            # gcsfs's default class first asks for the bucket type over gRPC, which emulators do not
            # speak (60 s per bucket); its plain JSON-API class is what an emulator serves
            from gcsfs.core import GCSFileSystem

            fs = GCSFileSystem(**storage_options(proto))
        else:
            fs = fsspec.filesystem(proto, **storage_options(proto))
    except ImportError as exc:
        extra = _EXTRAS.get(proto)
        hint = f": pip install 'commer-pipeline[{extra}]'" if extra else ""
        raise StorageError(f"{uri}: no fsspec backend for {proto}:// is installed{hint} ({exc})") from exc
    except ValueError as exc:  # fsspec: unknown protocol
        raise StorageError(f"{uri}: {exc}") from exc
    return fs, fs._strip_protocol(uri).rstrip("/")


def arrow_filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem over :func:`filesystem` (native for local paths), and the path in it."""
    if protocol(uri) == "file":
        return pafs.LocalFileSystem(), os.path.abspath(local_path(uri))
    fs, path = filesystem(uri)
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path


def read_bytes(uri: str) -> bytes:
    """The whole object (or file) at ``uri``."""
    fs, path = filesystem(uri)
    return fs.cat_file(path)


def write_bytes(uri: str, data: bytes) -> None:
    """Write ``data`` to ``uri``: one object put (atomic on object stores); locally a temp file and a rename."""
    if protocol(uri) == "file":
        from commer_core.files import atomic_write_bytes

        atomic_write_bytes(local_path(uri), data)
        return
    fs, path = filesystem(uri)
    fs.pipe_file(path, data)


def _token(fs: Any, proto: str, path: str) -> str | None:
    """The object's version token (S3 ETag, GCS generation), None when it does not exist."""
    fs.invalidate_cache(path)
    try:
        info = fs.info(path)
    except FileNotFoundError:
        return None
    token = info.get("generation") if proto == "gs" else info.get("ETag") or info.get("etag")
    if token is None:
        raise StorageError(f"{proto}://{path}: the backend reports no version token (ETag / generation)")
    return str(token)


def read_versioned(uri: str) -> tuple[bytes | None, str | None]:
    """``(content, token)`` of an object read once, consistently; ``(None, None)`` when absent.

    The token is what :func:`write_if` expects: the content is re-read until the token
    before and after it agree, so the pair belongs together.
    """
    proto = protocol(uri)
    if proto not in CONDITIONAL_PROTOCOLS:
        raise StorageError(f"{uri}: no conditional writes on {proto}:// here (only {', '.join(CONDITIONAL_PROTOCOLS)})")
    fs, path = filesystem(uri)
    for _ in range(5):
        before = _token(fs, proto, path)
        if before is None:
            return None, None
        try:
            data = fs.cat_file(path)
        except FileNotFoundError:
            continue
        if _token(fs, proto, path) == before:
            return data, before
    raise StorageError(f"{uri} kept changing while it was read")


def write_if(uri: str, data: bytes, token: str | None) -> None:
    """Write ``data`` to ``uri`` only if it is still at version ``token`` (None: only if it does not exist).

    S3: ``If-Match: <ETag>`` / ``If-None-Match: *``; GCS: ``ifGenerationMatch=<generation>``
    (0 for absent). One request, decided by the store itself: two writers holding the same
    token cannot both succeed. Raises :class:`PreconditionFailed` when the object moved.
    """
    proto = protocol(uri)
    fs, path = filesystem(uri)
    try:
        if proto == "s3":
            condition = {"IfNoneMatch": "*"} if token is None else {"IfMatch": token}
            fs.call_s3("put_object", Bucket=path.split("/", 1)[0], Key=path.split("/", 1)[1], Body=data, **condition)
        elif proto == "gs":
            from urllib.parse import quote

            bucket, key = path.split("/", 1)
            fs.call("POST", f"{fs._location}/upload/storage/v1/b/{quote(bucket)}/o", uploadType="media",
                    name=key, ifGenerationMatch=token or "0", data=data, json_out=True)
        else:
            raise StorageError(f"{uri}: no conditional writes on {proto}:// here (only {', '.join(CONDITIONAL_PROTOCOLS)})")
    except FileExistsError as exc:  # gcsfs: HTTP 412
        raise PreconditionFailed(f"{uri} changed since it was read") from exc
    except OSError as exc:
        if isinstance(exc, StorageError) or not _is_precondition(exc):
            raise
        raise PreconditionFailed(f"{uri} changed since it was read") from exc
    finally:
        fs.invalidate_cache(path)


#: Protocols :func:`write_if` supports.
CONDITIONAL_PROTOCOLS = ("s3", "gs")


def _is_precondition(exc: BaseException) -> bool:
    """An S3 ``PreconditionFailed`` (412) or ``ConditionalRequestConflict`` (409), as s3fs translates them."""
    seen: BaseException | None = exc
    while seen is not None:
        code = getattr(seen, "response", {}).get("Error", {}).get("Code") if hasattr(seen, "response") else None
        if code in ("PreconditionFailed", "ConditionalRequestConflict") or "pre-condition" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def download_tree(uri: str, target: str | os.PathLike[str]) -> list[str]:
    """Copy every object under the prefix ``uri`` into the local directory ``target``; their relative paths."""
    fs, root = filesystem(uri)
    names = sorted(p for p in fs.find(root) if p != root)
    if not names:
        raise FileNotFoundError(f"nothing under {uri}")
    relative = [name[len(root):].lstrip("/") for name in names]
    for name, rel in zip(names, relative):
        dest = os.path.join(os.fspath(target), *rel.split("/"))
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        fs.get_file(name, dest)
    return relative
