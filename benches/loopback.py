"""Helpers the Python benchmarks share (benches/self_restart.py, benches/fleet.py): loopback
ports, one HTTP request on a fresh connection, and wrk's figures."""
import re
import socket


def free_port():
    """A port nothing listens on right now."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def get(port, path, timeout=2):
    """`GET path` on a new connection (`Connection: close`): the whole answer, or None if
    nobody answered."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := s.recv(65536):
                data += chunk
            return data
    except OSError:
        return None


def wrk_figures(out):
    """(requests, failed) from wrk's output: failed = socket errors + non-2xx/3xx."""
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    failed = 0
    if m := re.search(r"Socket errors:(.*)", out):
        failed += sum(int(n) for n in re.findall(r"\d+", m.group(1)))
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        failed += int(m.group(1))
    return requests, failed
