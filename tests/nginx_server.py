"""A real nginx (Debian's nginx-light) serving a directory on a loopback address, for the tests that pull over HTTP.

``nginx_server(root, workdir)`` runs ``nginx -p <workdir> -c <conf> -g 'daemon off;'`` in the
foreground with its own configuration, pid file, logs and temporary directories under
``workdir`` (never the system service), on a free port of 127.0.0.1 (or ``address``), and
stops it on exit. The access log has one line per request: ``<uri> <status> <Range header>
<body bytes sent>``.
"""
import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

NGINX = ("/usr/sbin/nginx", "nginx")
START_WAIT = 30.0  # seconds to wait for the listening socket (a readiness wait, not an assertion)


class NginxError(RuntimeError):
    pass


def nginx_binary():
    for candidate in NGINX:
        found = shutil.which(candidate)
        if found:
            return found
    raise NginxError("nginx is missing: run scripts/setup-host.sh (requirements/apt.txt lists nginx-light)")


def free_port(address="127.0.0.1"):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((address, 0))
        return s.getsockname()[1]


def _config(workdir, root, address, port, extra, ssl, connections):
    temp = os.path.join(workdir, "temp")
    listen = "%s:%d%s" % (address, port, " ssl" if ssl else "")
    tls = ""
    if ssl:
        tls = "ssl_certificate %s;\n    ssl_certificate_key %s;\n" % ssl
    return """
user root;
worker_processes 1;
error_log %(dir)s/error.log;
pid %(dir)s/nginx.pid;
events { worker_connections %(connections)d; }
http {
  log_format plain '$request_uri $status "$http_range" $body_bytes_sent';
  access_log %(dir)s/access.log plain;
  client_body_temp_path %(temp)s/body;
  proxy_temp_path %(temp)s/proxy;
  fastcgi_temp_path %(temp)s/fastcgi;
  uwsgi_temp_path %(temp)s/uwsgi;
  scgi_temp_path %(temp)s/scgi;
  default_type application/octet-stream;
  server {
    listen %(listen)s;
    %(tls)s
    root %(root)s;
    %(extra)s
  }
}
""" % {"dir": workdir, "temp": temp, "listen": listen, "root": root, "extra": extra, "tls": tls, "connections": connections}


@contextlib.contextmanager
def nginx_server(root, workdir, extra="", address="127.0.0.1", ssl=None, connections=64):
    """Serve ``root``; yields the base URL (``http://address:port/``). ``ssl``: (cert, key) paths for HTTPS.

    ``extra`` is inserted into the server block (``location`` blocks, ``limit_rate``...).
    ``connections``: nginx's worker_connections (its one worker's limit of simultaneous connections).
    """
    binary = nginx_binary()
    os.makedirs(os.path.join(workdir, "temp"), exist_ok=True)
    port = free_port(address)
    conf = os.path.join(workdir, "nginx.conf")
    with open(conf, "w") as f:
        f.write(_config(workdir, root, address, port, extra, ssl, connections))
    test = subprocess.run([binary, "-t", "-p", workdir, "-c", conf, "-g", "daemon off;"], capture_output=True, text=True,
                          check=False)
    if test.returncode != 0:
        raise NginxError("nginx refused the test configuration %s: %s" % (conf, test.stderr))
    proc = subprocess.Popen([binary, "-p", workdir, "-c", conf, "-g", "daemon off;"], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + START_WAIT
        while True:
            if proc.poll() is not None:
                raise NginxError("nginx exited (%s) at start: %s" % (proc.returncode, proc.stdout.read().decode(errors="replace")))
            try:
                socket.create_connection((address, port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise NginxError("nginx did not listen on %s:%d within %.0f s" % (address, port, START_WAIT))
                time.sleep(0.05)
        yield "%s://%s:%d/" % ("https" if ssl else "http", address, port)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGQUIT)  # graceful: the master waits for its workers
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        proc.stdout.close()


def access_log(workdir):
    """``[(uri, status, range or '-', bytes)]`` of the requests so far."""
    out = []
    path = os.path.join(workdir, "access.log")
    if not os.path.exists(path):
        return out
    with open(path) as f:
        for line in f:
            uri, status, rng, sent = line.rstrip("\n").rsplit(" ", 3)
            out.append((uri, int(status), rng.strip('"'), int(sent)))
    return out


def serve(argv=None):
    """``serve ROOT WORKDIR [--address A]``: nginx_server() until SIGTERM or SIGINT; the URL in WORKDIR/url."""
    parser = argparse.ArgumentParser(prog="nginx_server.py")
    sub = parser.add_subparsers(dest="command", required=True)
    p_serve = sub.add_parser("serve", help="serve ROOT until SIGTERM, the URL in WORKDIR/url")
    p_serve.add_argument("root")
    p_serve.add_argument("workdir")
    p_serve.add_argument("--address", default="127.0.0.1")
    args = parser.parse_args(argv)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    signal.signal(signal.SIGINT, lambda *_: stop.append(True))
    url_file = os.path.join(args.workdir, "url")
    os.makedirs(args.workdir, exist_ok=True)
    with open(os.path.join(args.workdir, "pid"), "w") as f:
        f.write("%d\n" % os.getpid())
    with nginx_server(os.path.abspath(args.root), os.path.abspath(args.workdir), address=args.address) as url:
        with open(url_file + ".tmp", "w") as f:
            f.write(url + "\n")
        os.rename(url_file + ".tmp", url_file)
        while not stop:
            time.sleep(0.2)
    os.unlink(url_file)
    return 0


if __name__ == "__main__":
    sys.exit(serve())
