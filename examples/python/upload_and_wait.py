#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""upload_and_wait.py - how an application hands an image to imgd and learns when its
variants are published, with nothing but Python 3's standard library:

  1. subscribe to imgd's events on its control socket ({"v":1,"cmd":"events"}), before the
     file appears, so that no event about it can be missed;
  2. write the upload atomically: under a hidden temporary name in the watched folder (imgd
     ignores names starting with '.'), flushed to disk, then renamed to its name;
  3. wait for the `done` (or `dead`) event of that file and print the published variants:
     one "VARIANT PATH" line each, then "placeholder JSON" and "manifest PATH" when the event
     carries them.

The protocol is newline-delimited JSON (README.md, "The control protocol"): answers have
"ok", events have "event"; a job's events name it by "id" and "source" (its path).

  python3 upload_and_wait.py [--socket PATH] --watch DIR [--name NAME] [--timeout SECONDS] FILE

Exit status: 0 published; 1 the job failed (dead or cancelled) or no event came in time;
2 usage error; 3 imgd could not be reached or closed the connection.
"""
import argparse
import json
import os
import socket
import sys
import time


class Failure(Exception):
    def __init__(self, message, code):
        super().__init__(message)
        self.code = code


class Connection:
    """A connection to imgd's control socket, read one JSON line at a time."""

    def __init__(self, path, deadline):
        self.deadline = deadline
        self.buffer = b""
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.sock.settimeout(max(0.0, deadline - time.monotonic()))
            self.sock.connect(path)
        except OSError as e:
            self.sock.close()
            raise Failure(f"cannot talk to imgd at {path}: {e.strerror or e}", 3) from e
        self.path = path

    def send(self, request):
        self.sock.sendall(json.dumps(request).encode() + b"\n")

    def read(self, on_timeout):
        """The next message, parsed; raises on_timeout once the deadline has passed."""
        while b"\n" not in self.buffer:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise on_timeout
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                raise on_timeout from None
            except OSError as e:
                raise Failure(f"lost the connection to imgd: {e}", 3) from e
            if not chunk:
                raise Failure(f"imgd closed the connection ({self.path})", 3)
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        if not line.strip():
            return self.read(on_timeout)
        try:
            return json.loads(line)
        except ValueError:
            raise Failure(f"imgd sent a line that is not JSON: {line[:200]!r}", 3) from None

    def close(self):
        self.sock.close()


def subscribe(conn, on_timeout):
    conn.send({"v": 1, "cmd": "events"})
    while True:
        msg = conn.read(on_timeout)
        if "event" in msg:
            continue  # events of others, before our answer
        if msg.get("ok") is True and (msg.get("result") or {}).get("subscribed"):
            return
        raise Failure(f"imgd refused the subscription: {msg.get('error', msg)}", 3)


def drop_atomically(file, watch_dir, name):
    """Copies file into watch_dir as name: hidden temporary name, fsync, rename."""
    final = os.path.join(watch_dir, name)
    tmp = os.path.join(watch_dir, f".{name}.{os.getpid()}.tmp")
    with open(file, "rb") as src:
        data = src.read()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.rename(tmp, final)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return final


def same_path(a, b):
    """The same file name, the folder's symbolic links resolved (as imgd may spell it)."""
    if not isinstance(a, str):
        return False
    if a == b:
        return True
    return (os.path.basename(a) == os.path.basename(b)
            and os.path.realpath(os.path.dirname(a)) == os.path.realpath(os.path.dirname(b)))


def print_done(job):
    outputs = job.get("outputs")
    for o in outputs if isinstance(outputs, list) else []:
        if isinstance(o, dict) and isinstance(o.get("path"), str):
            print(f"{o.get('variant', '?')} {o['path']}")
    # Optional: not every imgd puts these in the event.
    if job.get("placeholder") is not None:
        print("placeholder " + json.dumps(job["placeholder"], separators=(",", ":")))
    if isinstance(job.get("manifest"), str):
        print(f"manifest {job['manifest']}")


def wait_for(conn, source, on_timeout):
    job_id = None
    while True:
        msg = conn.read(on_timeout)
        if "event" not in msg:
            # An answer to our own request (the "show" below).
            job = (msg.get("result") or {}).get("job") if msg.get("ok") else None
            if isinstance(job, dict) and job_id is not None and job.get("id") == job_id:
                print_done(job)
                return 0
            continue
        job = msg.get("job") if isinstance(msg.get("job"), dict) else {}
        ours = (job_id is not None and job.get("id") == job_id) or same_path(job.get("source"), source)
        if not ours:
            continue
        if job_id is None:
            job_id = job.get("id")
        event = msg["event"]
        if event == "done":
            if job.get("outputs_omitted"):
                # Too many outputs for one event line: ask for the job.
                conn.send({"v": 1, "cmd": "show", "id": job_id})
                continue
            print_done(job)
            return 0
        if event == "dead":
            raise Failure(f"job {job.get('id')} {job.get('source')}: dead: "
                          f"{job.get('error') or 'no error given'}", 1)
        if event == "cancelled":
            raise Failure(f"job {job.get('id')} {job.get('source')}: cancelled", 1)
        if event == "retry":
            print(f"job {job.get('id')}: will be retried: {job.get('error', '')}", file=sys.stderr)
        # queued, and events this example does not know: keep waiting


def main(argv):
    parser = argparse.ArgumentParser(
        prog="upload_and_wait.py",
        description="Drop FILE into an imgd watched folder and wait for its variants.")
    parser.add_argument("--socket", default=os.environ.get("IMGD_SOCKET", "/run/imgd/imgd.sock"),
                        help="imgd's control socket (default: $IMGD_SOCKET or /run/imgd/imgd.sock)")
    parser.add_argument("--watch", required=True, help="the watched upload folder")
    parser.add_argument("--name", help="the name to give FILE there (default: its name)")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="give up after this many seconds (default: 120)")
    parser.add_argument("file", metavar="FILE")
    args = parser.parse_args(argv)  # exits 2 on a usage error
    if args.timeout <= 0:
        parser.error("--timeout needs a positive number of seconds")

    name = args.name or os.path.basename(args.file)
    deadline = time.monotonic() + args.timeout
    on_timeout = Failure(
        f"timed out after {args.timeout:g} s waiting for imgd to finish {name} (is the folder "
        "watched? an upload whose content imgd has already processed at that path makes no "
        "new job)", 1)
    conn = Connection(args.socket, deadline)
    try:
        subscribe(conn, on_timeout)
        source = drop_atomically(args.file, args.watch, name)
        return wait_for(conn, source, on_timeout)
    finally:
        conn.close()


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except Failure as e:
        print(f"upload_and_wait: {e}", file=sys.stderr)
        sys.exit(e.code)
    except OSError as e:
        print(f"upload_and_wait: {e}", file=sys.stderr)
        sys.exit(1)
