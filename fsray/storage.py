"""Where Ray Tune / Ray Train state and checkpoints go, and where a run's results are copied.

A storage location is a local path (the default: the run directory; one node only), a path on a
filesystem every node mounts (NFS, ...), or an object-store URI (``s3://bucket/prefix``,
``gs://bucket/prefix``, ``abfs://...``, ``hdfs://...``). It is resolved the way Ray resolves
``RunConfig(storage_path=...)``: ``pyarrow.fs.FileSystem.from_uri``, with the endpoint and
credentials that pyarrow takes from the environment (``AWS_ENDPOINT_URL``/``AWS_ENDPOINT_URL_S3``,
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``, ``AWS_REGION``;
``GOOGLE_APPLICATION_CREDENTIALS``; query parameters such as ``?endpoint_override=...``).

``check_storage(uri)`` probes the location before any training (write, read back and delete a small
marker, with a time limit): a bad scheme, an unreachable endpoint, a missing bucket or refused
credentials is one ``UsageError`` line (exit 2). ``upload_run`` copies a finished run's results
there; ``fetch_run`` brings them back for ``fsray report URI``. ``RunCheckpoint`` is where one seed
run keeps its resumable state (under the search's Ray Train storage).
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fsray.errors import UsageError

PROBE_TIMEOUT_S = 30.0
# the results of a run (what `fsray report` reads and what a person looks at); not Tune's state
RESULT_FILES = ("results.jsonl", "baselines.jsonl", "summary.json", "space.json", "importance.json",
                "report.html")


_CHECKED: dict[str, "ResolvedStorage"] = {}  # checked once per process (the CLI, then run_search)


def is_uri(location: str | os.PathLike) -> bool:
    """An object-store / remote filesystem URI (``scheme://...``), not a local path."""
    s = str(location)
    return "://" in s and not s.startswith("file://")


@dataclass(frozen=True)
class ResolvedStorage:
    """A checked storage location.

    ``uri``: what to hand to Ray (``RunConfig(storage_path=uri)``, Tune and Train alike): the URI as
    given, or an absolute local path. ``filesystem`` and ``path``: the pyarrow filesystem and the
    path within it (``RunConfig(storage_filesystem=...)`` is not needed: Ray resolves ``uri`` the
    same way)."""

    uri: str
    filesystem: Any  # pyarrow.fs.FileSystem
    path: str
    remote: bool

    @property
    def is_local(self) -> bool:
        return not self.remote

    def child(self, *parts: str) -> str:
        """The URI (or local path) of a location below this one."""
        return join_location(self.uri, *parts)

    def run_config_kwargs(self) -> dict:
        """Keyword arguments for ``ray.tune.RunConfig`` / ``ray.train.RunConfig``."""
        return {"storage_path": self.uri}


def join_location(location: str, *parts: str) -> str:
    """``location/part/...`` for a local path or a URI; a URI keeps its query (``?endpoint_override=``)."""
    tail = "/".join(p.strip("/") for p in parts if p)
    if not tail:
        return str(location)
    if "://" in str(location):
        base, q, query = str(location).partition("?")
        return f"{base.rstrip('/')}/{tail}" + (f"?{query}" if q else "")
    return str(Path(location, *[p for p in parts if p]))


def _scheme(uri: str) -> str:
    return uri.split("://", 1)[0].lower() if "://" in uri else ""


def resolve(location: str | os.PathLike) -> ResolvedStorage:
    """Parse a location into a pyarrow filesystem and path (no I/O for local paths)."""
    import pyarrow.fs as pafs

    s = str(location).strip()
    if not s:
        raise UsageError("storage path: empty")
    if not is_uri(s):
        local = Path(s.removeprefix("file://")).expanduser().resolve()
        return ResolvedStorage(str(local), pafs.LocalFileSystem(), str(local), remote=False)
    try:
        fs, path = pafs.FileSystem.from_uri(s)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises ArrowInvalid / OSError / ValueError
        msg = _first_line(exc)
        if "Unrecognized filesystem type" in msg or "unknown" in msg.lower():
            raise UsageError(f"storage path {s}: unknown scheme {_scheme(s)!r} (use a local or shared "
                             f"filesystem path, or s3://, gs://, abfs://, hdfs://)") from None
        raise UsageError(f"storage path {s}: {msg}") from None
    if not path.strip("/"):
        raise UsageError(f"storage path {s}: name a bucket (and a prefix), e.g. {_scheme(s)}://BUCKET/fsray")
    return ResolvedStorage(s, fs, path.rstrip("/"), remote=True)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _no_credentials(uri: str) -> bool:
    """True where none of the credential sources the SDKs read at rest is present (environment,
    profile, shared files); an instance role cannot be seen from here, so only where the metadata
    service is off (s3) or for gs://, whose default credentials file is the usual way."""
    env, home = os.environ, Path.home()
    scheme = _scheme(uri)
    if scheme in ("s3", "s3a"):
        if any(env.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE",
                                    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                                    "AWS_CONTAINER_CREDENTIALS_FULL_URI")):
            return False
        files = [env.get("AWS_SHARED_CREDENTIALS_FILE") or home / ".aws" / "credentials",
                 env.get("AWS_CONFIG_FILE") or home / ".aws" / "config"]
        return (not any(Path(f).is_file() for f in files)
                and env.get("AWS_EC2_METADATA_DISABLED", "").lower() == "true")
    if scheme in ("gs", "gcs"):
        return not (env.get("GOOGLE_APPLICATION_CREDENTIALS")
                    or (home / ".config" / "gcloud" / "application_default_credentials.json").is_file())
    return False


def _explain(uri: str, exc: BaseException) -> str:
    """One line for a failed probe."""
    msg = _first_line(exc)
    low = msg.lower()
    if _no_credentials(uri):
        # Without credentials the request goes out anonymous and what comes back varies by server
        # (403, 400, even 500): the missing credentials are what to say.
        return (f"storage path {uri}: no credentials found ({msg}); for s3:// set "
                f"AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE, for gs:// "
                f"GOOGLE_APPLICATION_CREDENTIALS")
    if "no_such_bucket" in low or "nosuchbucket" in low or "bucket does not exist" in low or (
            "bucket" in low and "not found" in low):
        return f"storage path {uri}: the bucket does not exist ({msg})"
    if any(k in low for k in ("access_denied", "accessdenied", "invalidaccesskeyid", "signaturedoesnotmatch",
                              "credentials", "forbidden", "unauthorized", "permission denied", "403")):
        return (f"storage path {uri}: access refused or no credentials ({msg}); for s3:// set "
                f"AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE, for gs:// "
                f"GOOGLE_APPLICATION_CREDENTIALS")
    if any(k in low for k in ("curl", "connect", "resolve host", "timed out", "timeout", "network",
                              "unreachable", "refused")):
        return f"storage path {uri}: the endpoint cannot be reached ({msg})"
    return f"storage path {uri}: {msg}"


def _probe(st: ResolvedStorage) -> None:
    """Write, read back and delete a marker under the location."""
    import pyarrow.fs as pafs

    fs = st.filesystem
    if not st.remote:
        Path(st.path).mkdir(parents=True, exist_ok=True)
    else:
        info = fs.get_file_info(st.path)
        if info.type == pafs.FileType.File:
            raise UsageError(f"storage path {st.uri}: is a file, not a directory/prefix")
    marker = f"{st.path}/.fsray-probe-{uuid.uuid4().hex[:12]}"
    payload = b"fsray storage probe\n"
    with fs.open_output_stream(marker) as f:
        f.write(payload)
    with fs.open_input_stream(marker) as f:
        back = f.read()
    fs.delete_file(marker)
    if back != payload:
        raise OSError(f"read back {len(back)} bytes, wrote {len(payload)}")


def check_storage(location: str | os.PathLike, timeout_s: float = PROBE_TIMEOUT_S) -> ResolvedStorage:
    """Resolve ``location`` and prove it usable now (write + read + delete a marker).

    Raises ``UsageError`` with one line: unknown scheme, a missing bucket, refused or missing
    credentials, an endpoint that does not answer (within ``timeout_s``), a local path that cannot
    be created or written."""
    key = str(location)
    if key in _CHECKED:
        return _CHECKED[key]
    st = resolve(location)
    box: dict[str, BaseException | None] = {"exc": None}

    def work():
        try:
            _probe(st)
        except BaseException as exc:  # noqa: BLE001 - reported below
            box["exc"] = exc

    t = threading.Thread(target=work, name="fsray-storage-probe", daemon=True)
    t.start()
    t.join(timeout_s)
    if t.is_alive():
        raise UsageError(f"storage path {st.uri}: no answer within {timeout_s:.0f}s (endpoint unreachable?)")
    exc = box["exc"]
    if isinstance(exc, UsageError):
        raise exc
    if exc is not None:
        if not st.remote:
            raise UsageError(f"storage path {st.uri}: cannot write there ({_first_line(exc)})") from None
        raise UsageError(_explain(st.uri, exc)) from None
    _CHECKED[key] = st
    return st


def run_location(storage: ResolvedStorage, run_dir: str | os.PathLike) -> str:
    """A run's place in the storage location: ``<storage>/<run directory's name>``. Tune's state goes
    below it (``name="tune"``), Ray Train's under ``train/``, the results copy at its top."""
    return storage.child(Path(run_dir).name)


def upload_run(run_dir: str | os.PathLike, location: str | os.PathLike | ResolvedStorage) -> list[str]:
    """Copy a run's result files (``RESULT_FILES`` that exist) to ``location`` (a directory/prefix);
    returns the names copied. Each file is written whole (object stores have no partial objects)."""
    import pyarrow.fs as pafs

    st = location if isinstance(location, ResolvedStorage) else resolve(location)
    run_dir = Path(run_dir)
    names = [n for n in RESULT_FILES if (run_dir / n).is_file()]
    if not st.remote:
        Path(st.path).mkdir(parents=True, exist_ok=True)
    else:
        st.filesystem.create_dir(st.path, recursive=True)
    local = pafs.LocalFileSystem()
    for name in names:
        pafs.copy_files(str((run_dir / name).resolve()), f"{st.path}/{name}",
                        source_filesystem=local, destination_filesystem=st.filesystem)
    return names


def fetch_run(location: str | os.PathLike, dest: str | os.PathLike | None = None) -> Path:
    """Download a run's result files from ``location`` (a prefix holding them, or one results
    file) into ``dest`` (default: a new temporary directory); returns the directory.
    ``UsageError`` (one line) when nothing is there or the location cannot be read."""
    import pyarrow.fs as pafs

    st = resolve(location)
    dest = Path(dest) if dest is not None else Path(tempfile.mkdtemp(prefix="fsray-fetch-"))
    dest.mkdir(parents=True, exist_ok=True)
    fs = st.filesystem
    try:
        info = fs.get_file_info(st.path)
        if info.type == pafs.FileType.File:
            sources = [st.path]
        else:
            listing = fs.get_file_info(pafs.FileSelector(st.path, allow_not_found=True))
            files = {Path(i.path).name: i.path for i in listing if i.type == pafs.FileType.File}
            sources = [files[n] for n in RESULT_FILES if n in files]
            sources += [p for n, p in sorted(files.items())
                        if n not in RESULT_FILES and n.endswith((".jsonl", ".csv", ".txt"))]
        if not sources:
            raise UsageError(f"{st.uri}: no fsray results there (expected {RESULT_FILES[0]})")
        for src in sources:
            pafs.copy_files(src, str(dest / Path(src).name), source_filesystem=fs,
                            destination_filesystem=pafs.LocalFileSystem())
    except UsageError:
        raise
    except Exception as exc:  # noqa: BLE001 - one line for the CLI
        raise UsageError(_explain(st.uri, exc)) from None
    return dest


class RunCheckpoint:
    """Where one seed run keeps its resumable state: a local path or any URI a pyarrow filesystem
    takes (``s3://``, ``gs://``, ...: the storage a search names), so a run lost with its node
    resumes on another node from its last evaluation instead of from step 0.

    The state is saved at an evaluation at most every ``every_s`` seconds (and at the first one), as
    one file written under a temporary name and then moved into place, and deleted when the run
    returns. Resuming restores the weights, the FS gates, the optimizer, the curve and the data
    stream's position, so a resumed run's result equals an uninterrupted one.
    """

    FILE = "state.pt"

    def __init__(self, uri: str, every_s: float = 300.0):
        import pyarrow.fs as pafs

        self.uri, self.every_s = uri, float(every_s)
        self.fs, self.path = pafs.FileSystem.from_uri(uri if "://" in uri else str(Path(uri).resolve()))
        self.last_save: float | None = None

    def load(self) -> dict | None:
        import io

        import pyarrow.fs as pafs
        import torch

        target = f"{self.path}/{self.FILE}"
        if self.fs.get_file_info(target).type != pafs.FileType.File:
            return None
        with self.fs.open_input_stream(target) as fh:
            return torch.load(io.BytesIO(fh.read()), map_location="cpu", weights_only=False)

    def due(self) -> bool:
        return self.last_save is None or time.monotonic() - self.last_save >= self.every_s

    def save(self, state: dict) -> None:
        import io

        import torch

        buf = io.BytesIO()
        torch.save(state, buf)
        self.fs.create_dir(self.path, recursive=True)
        tmp = f"{self.path}/{self.FILE}.tmp"
        with self.fs.open_output_stream(tmp) as fh:
            fh.write(buf.getvalue())
        self.fs.move(tmp, f"{self.path}/{self.FILE}")
        self.last_save = time.monotonic()

    def clear(self) -> None:
        try:
            self.fs.delete_dir(self.path)
        except (FileNotFoundError, OSError):
            pass
