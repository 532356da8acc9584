"""The dashboard's HTTP server: Python's own http.server, read-only, serving one run's curves.

    GET /                the page (static/index.html)
    GET /static/NAME     the page's script and style and the vendored uPlot (a fixed list: nothing else on disk)
    GET /data            the run's curves as JSON (RunCurves.snapshot)
    GET /events          the same as server-sent events, one whenever the curves change; ends after the run ends

Every other path is 404 and every other method 405.  A request whose Host header is not the server's own
address (DNS rebinding: a web page that re-points its name at 127.0.0.1) is refused with 403 while the server
listens on a loopback address.
"""
import ipaddress
import json
import socket
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources

STATIC = {
    "index.html": "text/html; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
    "vendor/uPlot.iife.min.js": "text/javascript; charset=utf-8",
    "vendor/uPlot.min.css": "text/css; charset=utf-8",
}
# How often an idle event stream sends a comment, so that a browser (and a proxy) keeps the connection.
KEEPALIVE_S = 15.0
# The least time between two events of a stream: a fast run changes its curves many times a second, and each
# event carries every curve.
EVENT_INTERVAL_S = 0.25
# The page's own files only: no inline script, nothing from another origin.
CSP = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; connect-src 'self'"


def static_file(name):
    """The bytes of a file of the page (a KeyError for a name outside STATIC)."""
    if name not in STATIC:
        raise KeyError(name)
    return resources.files(__package__).joinpath("static", *name.split("/")).read_bytes()


def is_loopback(host):
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class DashboardServer(ThreadingHTTPServer):
    daemon_threads = True       # an open event stream never keeps the program alive
    # SO_REUSEADDR: the port of a run that just ended (its connections in TIME_WAIT) can be taken again at once;
    # a port another program listens on is still refused
    allow_reuse_address = True

    def __init__(self, curves, host, port):
        if ":" in host:
            self.address_family = socket.AF_INET6      # ::1, ::
        super().__init__((host, port), DashboardHandler)
        self.curves = curves
        self.closing = threading.Event()
        self.host = host
        self.open_streams = 0           # event streams being served (close() lets them get the final state)
        self._streams_lock = threading.Lock()

    def count_stream(self, change):
        with self._streams_lock:
            self.open_streams += change

    @property
    def port(self):
        return self.server_address[1]

    def allowed_hosts(self):
        host = f"[{self.host}]" if ":" in self.host else self.host
        names = {host, "127.0.0.1", "localhost", "[::1]"}
        return {f"{name}:{self.port}" for name in names} | (names if self.port == 80 else set())


class DashboardHandler(BaseHTTPRequestHandler):
    server_version = "brewnet-dashboard"
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        if not self._host_allowed():
            return self._send_text(HTTPStatus.FORBIDDEN, "unknown Host header")
        path = self.path.split("?", 1)[0]
        if path in ("/", "/index.html"):
            return self._send(HTTPStatus.OK, static_file("index.html"), STATIC["index.html"])
        if path.startswith("/static/") and path[len("/static/"):] in STATIC:
            name = path[len("/static/"):]
            return self._send(HTTPStatus.OK, static_file(name), STATIC[name])
        if path == "/data":
            return self._send(HTTPStatus.OK, _json(self.server.curves.snapshot()), "application/json")
        if path == "/events":
            return self._events()
        return self._send_text(HTTPStatus.NOT_FOUND, "not found")

    def _read_only(self):
        self._send_text(HTTPStatus.METHOD_NOT_ALLOWED, "the dashboard is read-only", allow="GET")

    do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _read_only

    def _host_allowed(self):
        if not is_loopback(self.server.host):
            return True         # -dashboard_host widened it on purpose: any name that reaches it
        return self.headers.get("Host", "") in self.server.allowed_hosts()

    def _events(self):
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        curves, version = self.server.curves, None
        self.server.count_stream(+1)
        try:
            while not self.server.closing.is_set():
                current = curves.wait_for_change(version, KEEPALIVE_S)
                if current == version:
                    self.wfile.write(b": keep-alive\n\n")
                else:
                    version = current
                    data = curves.snapshot()
                    self.wfile.write(b"data: " + _json(data) + b"\n\n")
                    if data["status"] != "running":
                        self.wfile.write(b"event: end\ndata: {}\n\n")
                        self.wfile.flush()
                        return
                self.wfile.flush()
                self.server.closing.wait(EVENT_INTERVAL_S)
        except (BrokenPipeError, ConnectionResetError):
            pass        # the page went away
        finally:
            self.server.count_stream(-1)

    def _send_text(self, status, text, allow=None):
        headers = {"Allow": allow} if allow else {}
        self._send(status, text.encode(), "text/plain; charset=utf-8", **headers)

    def _send(self, status, body, content_type, **headers):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", CSP)
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        pass            # requests are not training news: the training log stays Caffe's


def _json(data):
    return json.dumps(data, separators=(",", ":"), allow_nan=False).encode()
