"""A real RTMP ingest for tests: nginx with the RTMP module, recording every push, on 127.0.0.1."""
from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

MODULE = Path("/usr/lib/nginx/modules/ngx_rtmp_module.so")

CONFIG = """load_module {module};
daemon off;
master_process off;
error_log {prefix}/error.log info;
pid {prefix}/nginx.pid;
events {{ worker_connections 64; }}
rtmp {{
    server {{
        listen 127.0.0.1:{port};
        application live {{ live on; record all; record_path {prefix}/rec; record_unique on; }}
    }}
}}
"""


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RtmpServer:
    """nginx-rtmp in ``prefix`` (its own config, logs, pid and recordings in ``prefix/rec``), started and
    stopped by pid; :meth:`restart` brings it back on the same port."""

    def __init__(self, prefix: Path, port: int | None = None) -> None:
        self.prefix, self.port = prefix, port or free_port()
        (prefix / "rec").mkdir(parents=True, exist_ok=True)
        (prefix / "logs").mkdir(exist_ok=True)
        self.config = prefix / "nginx.conf"
        self.config.write_text(CONFIG.format(module=MODULE, prefix=prefix, port=self.port))
        self.process: subprocess.Popen | None = None

    def url(self, key: str = "test") -> str:
        return f"rtmp://127.0.0.1:{self.port}/live/{key}"

    def start(self, timeout: float = 20.0) -> "RtmpServer":
        self.process = subprocess.Popen(["nginx", "-c", str(self.config), "-p", str(self.prefix)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while True:
            assert self.process.poll() is None, f"nginx exited: {(self.prefix / 'error.log').read_text()[-500:]}"
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                assert time.monotonic() < deadline, "nginx did not listen in time"
                time.sleep(0.05)

    def stop(self) -> None:
        """Kill it (SIGKILL by pid: connections are reset, as when an ingest dies)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None

    def recordings(self) -> list[Path]:
        """The .flv files recorded so far, oldest first."""
        return sorted((self.prefix / "rec").glob("*.flv"), key=lambda p: p.stat().st_mtime_ns)
