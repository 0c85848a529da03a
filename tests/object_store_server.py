"""A real S3-compatible server for the tests: moto's standalone server on 127.0.0.1 (a free port, no
network), with fake credentials in this process's environment, which launchers and Ray workers inherit.

Usage (a fixture)::

    with s3_server() as s3:
        s3.bucket("runs-bucket")
        storage = Storage(s3.uri("runs-bucket/runs"))   # s3://runs-bucket/runs?endpoint_override=...&scheme=http
"""
from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from typing import Iterator

import pyarrow.fs as pafs

#: Fake credentials: moto accepts any; pyarrow needs some to sign requests.
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
               "AWS_EC2_METADATA_DISABLED": "true"}


@dataclass
class S3:
    endpoint: str  # host:port

    def uri(self, path: str) -> str:
        """``s3://<path>`` with the endpoint in pyarrow's query parameters."""
        return f"s3://{path}?endpoint_override={self.endpoint}&scheme=http"

    def bucket(self, name: str) -> None:
        pafs.S3FileSystem(endpoint_override=self.endpoint, scheme="http", allow_bucket_creation=True).create_dir(name)

    def filesystem(self) -> pafs.S3FileSystem:
        return pafs.S3FileSystem(endpoint_override=self.endpoint, scheme="http")


@contextlib.contextmanager
def s3_server() -> Iterator[S3]:
    """Start moto's threaded server on a free port with fake credentials set; stop it and restore the
    environment at the end."""
    from moto.server import ThreadedMotoServer
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    saved = {k: os.environ.get(k) for k in CREDENTIALS}
    os.environ.update(CREDENTIALS)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield S3(f"{host}:{port}")
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
