"""Files copied into containers before they start: configs, and a node's TLS certificate and key.

A container's files arrive as a tar unpacked by the engine (`put_archive`), so their owner and
mode are the tar's: a config may be root's and world-readable, a private key may not. The key
goes into the node's data directory (its volume) owned by the image's user and readable by it
alone, as the ledger key the node writes there itself; node/service/tls.py refuses it otherwise.
"""

from __future__ import annotations

import io
import tarfile
import time
from pathlib import Path, PurePosixPath
from typing import Any

from node.service.config import TlsFiles
from orchestrator.certificates import (
    CA_FILE,
    CERT_FILE,
    KEY_FILE,
    TLS_DIR,
    Issued,
    RunAuthority,
    tls_paths,
    write_tls_files,
)

NODE_UID = 10001  # the image's user, `dfl` (Dockerfile)


def tar_of(path: str, data: str | bytes, *, mode: int = 0o644, owner: int = 0) -> bytes:
    """A tar to unpack at / that creates `path` (an absolute path) and its folders (0755),
    the file with `mode`, all of it owned by uid and gid `owner`."""
    parts = Path(path.lstrip("/")).parts
    folders = [str(Path(*parts[:depth])) for depth in range(1, len(parts))]
    return _tar(
        [(folder, None, 0o755) for folder in folders] + [(path.lstrip("/"), data, mode)], owner
    )


def tls_archive(issued: Issued, *, owner: int = NODE_UID) -> bytes:
    """`tls/` (0700) with ca.crt, node.crt (0644) and node.key (0600), owned by `owner`: to
    unpack in the node's data directory, where its config says they are (`tls_paths`)."""
    return _tar(
        [
            (TLS_DIR, None, 0o700),
            (f"{TLS_DIR}/{CA_FILE}", issued.ca_pem, 0o644),
            (f"{TLS_DIR}/{CERT_FILE}", issued.cert_pem, 0o644),
            (f"{TLS_DIR}/{KEY_FILE}", issued.key_pem, 0o600),
        ],
        owner,
    )


def _tar(entries: list[tuple[str, str | bytes | None, int]], owner: int) -> bytes:
    """Folders (data None) and files, in order, with their modes and one owner."""
    buffer = io.BytesIO()
    now = int(time.time())
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data, mode in entries:
            info = tarfile.TarInfo(name)
            info.mode, info.uid, info.gid, info.mtime = mode, owner, owner, now
            if data is None:
                info.type = tarfile.DIRTYPE
                archive.addfile(info)
                continue
            raw = data.encode() if isinstance(data, str) else data
            info.size = len(raw)
            archive.addfile(info, io.BytesIO(raw))
    return buffer.getvalue()


class ContainerCertificates:
    """The run's CA on the orchestrator's side of a container run, and what each node gets.

    The orchestrator's own certificate is written into the run directory (`client_tls`); each
    node's goes into its container (`archive`), valid for its name and its fixed address on
    the run's network (what the orchestrator dials) and for 127.0.0.1 (its health check).
    """

    def __init__(self, run_name: str, out: Path, data_path: str) -> None:
        self.authority = RunAuthority(run_name)
        self.client_tls: TlsFiles = write_tls_files(
            out / "orchestrator", self.authority.orchestrator()
        )
        self.node_tls = tls_paths(PurePosixPath(data_path))  # as every container sees them
        self._data_path = data_path

    def setting(self) -> dict[str, Any]:
        """The node config's `tls` entry (the same for every node: paths inside it)."""
        return {"tls": self.node_tls.model_dump(mode="json")}

    def archive(self, name: str, address: str) -> bytes:
        """The node's files, to unpack at its data directory (put_archive there)."""
        issued = self.authority.issue(name, ip_addresses=[address, "127.0.0.1"])
        return tls_archive(issued)

    def health_test(self) -> list[str]:
        """The image's health check, over TLS with the node's own certificate."""
        folder = f"{self._data_path.rstrip('/')}/{TLS_DIR}"
        return ["CMD", "python", "-m", "node.healthcheck", "--tls", folder]


def health_settings(
    certificates: ContainerCertificates | None, start_period: float
) -> dict[str, Any]:
    """A node container's `healthcheck`: the image's own, over TLS when the run uses it, with
    the run's start period (seconds)."""
    settings: dict[str, Any] = {"start_period": int(start_period * 1e9)}
    if certificates is not None:
        settings["test"] = certificates.health_test()
    return settings
