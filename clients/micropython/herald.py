"""Herald client for MicroPython (one file, builtins only).

Publishes over REST, subscribes over long-poll (cursor resume) or one
WebSocket (``since``/``cursor`` resume), reconnects with backoff over a list
of nodes, and honours a node's ``Retry-After`` when it cannot serve yet.
Every buffer is bounded: a message larger than ``max_message`` bytes is
refused with :class:`HeraldError`, never skipped. Plain ``http://`` only.

    import herald
    c = herald.Client(["http://192.168.1.10:8080", "http://192.168.1.11:8080"])
    c.publish("sensors.kitchen", {"t": 21.5})
    c.listen(["sensors.*"], lambda m: print(m["topic"], m["seq"], m["data"]))

Runs on CPython too (for tests of the logic); the tests run it on the real
MicroPython interpreter.
"""

import gc
import json
import socket
import time

try:
    import select
except ImportError:  # pragma: no cover - every port has it
    select = None
try:
    import os

    _urandom = os.urandom
except (ImportError, AttributeError):  # pragma: no cover
    _urandom = None
try:
    import random
except ImportError:  # pragma: no cover
    random = None
try:
    from binascii import a2b_base64, b2a_base64
except ImportError:  # pragma: no cover
    from ubinascii import a2b_base64, b2a_base64
try:
    from hashlib import sha1 as _hw_sha1
except ImportError:
    _hw_sha1 = None

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
FATAL = ("bad_request", "invalid_topic", "unauthorized", "forbidden", "payload_too_large")
_TIMEOUTS = (11, 110, 116)  # EAGAIN (unix port), ETIMEDOUT (Linux, lwIP)


class HeraldError(Exception):
    """A refusal that retrying cannot fix (``code`` is the server's code), or
    a message this client cannot hold (``too_large``)."""

    def __init__(self, code, message=""):
        super().__init__(code + ": " + message)
        self.code = code


class _Unavailable(Exception):
    """The node cannot serve now: another node, this one after ``after`` s."""

    def __init__(self, why, after=1.0):
        super().__init__(why)
        self.after = after


# -- time, randomness ---------------------------------------------------------


def _ms():
    return time.ticks_ms() if hasattr(time, "ticks_ms") else int(time.time() * 1000)


def _since(t0):
    return time.ticks_diff(_ms(), t0) if hasattr(time, "ticks_diff") else _ms() - t0


def _sleep(s):
    if s > 0:
        time.sleep(s)


def _random_bytes(n):
    if _urandom is not None:
        return _urandom(n)
    return bytes(random.getrandbits(8) for _ in range(n))


def _jitter(x):
    """``x`` scaled by a random factor in [0.5, 1]."""
    return x * (0.5 + (_random_bytes(1)[0] / 510))


# -- SHA-1 (for Sec-WebSocket-Accept; some builds have no hashlib.sha1) -------


def sha1(data):
    """SHA-1 digest of ``data`` (hashlib's when the build has it)."""
    if _hw_sha1 is not None:
        return _hw_sha1(data).digest()
    m = 0xFFFFFFFF
    h = [0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0]
    n = len(data)
    data = bytes(data) + b"\x80" + b"\x00" * ((55 - n) % 64) + (n * 8).to_bytes(8, "big")
    for off in range(0, len(data), 64):
        w = [int.from_bytes(data[off + 4 * i : off + 4 * i + 4], "big") for i in range(16)]
        for i in range(16, 80):
            x = w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]
            w.append(((x << 1) | (x >> 31)) & m)
        a, b, c, d, e = h
        for i in range(80):
            if i < 20:
                f, k = (b & c) | (~b & d), 0x5A827999
            elif i < 40:
                f, k = b ^ c ^ d, 0x6ED9EBA1
            elif i < 60:
                f, k = (b & c) | (b & d) | (c & d), 0x8F1BBCDC
            else:
                f, k = b ^ c ^ d, 0xCA62C1D6
            a, b, c, d, e = (((a << 5) | (a >> 27)) + f + e + k + w[i]) & m, a, ((b << 30) | (b >> 2)) & m, c, d
        h = [(x + y) & m for x, y in zip(h, (a, b, c, d, e))]
    return b"".join(x.to_bytes(4, "big") for x in h)


def accept_key(key):
    """The ``Sec-WebSocket-Accept`` a server must answer to ``key``."""
    return b2a_base64(sha1(key + WS_GUID)).strip()


# -- topics and cursors --------------------------------------------------------


def matches(pattern, topic):
    """NATS-style match: ``*`` one token, trailing ``>`` one or more."""
    p, t = pattern.split("."), topic.split(".")
    for i in range(len(p)):
        if p[i] == ">":
            return len(t) > i
        if i >= len(t) or (p[i] != "*" and p[i] != t[i]):
            return False
    return len(p) == len(t)


def _concrete(pattern):
    return "*" not in pattern.split(".") and ">" not in pattern.split(".")


def _quote(s):
    out = []
    for ch in s.encode():
        c = chr(ch)
        if c.isalpha() or c.isdigit() or c in "-_.~":
            out.append(c)
        else:
            out.append("%%%02X" % ch)
    return "".join(out)


def _parse_cursor(text):
    """``1~floor~topic~seq...`` → (floor, {topic: seq})."""
    parts = text.split("~")
    if parts[0] != "1" or len(parts) < 2 or len(parts) % 2:
        raise HeraldError("bad_response", "malformed cursor")
    pos = {}
    for i in range(2, len(parts), 2):
        pos[parts[i]] = int(parts[i + 1])
    return int(parts[1]), pos


def _cursor(floor, positions):
    out = ["1", str(floor)]
    for t in sorted(positions):
        out.append(t)
        out.append(str(positions[t]))
    return "~".join(out)


# -- HTTP/1.1 by hand ----------------------------------------------------------


def _split_url(url):
    if not url.startswith("http://"):
        raise ValueError("only http:// URLs (this build has no TLS): " + url)
    rest = url[7:].rstrip("/")
    host, _, port = rest.partition(":")
    return host, int(port) if port else 80


class _Conn:
    """One HTTP/1.1 exchange (``Connection: close``) or, after an upgrade,
    one WebSocket. Reads in chunks of at most ``chunk`` bytes."""

    def __init__(self, url, timeout, chunk=512):
        host, port = _split_url(url)
        self.host = "%s:%d" % (host, port)
        self.sock = socket.socket()
        self.sock.settimeout(timeout)
        self.chunk = chunk
        self.pending = b""
        try:
            self.sock.connect(socket.getaddrinfo(host, port)[0][-1])
        except BaseException:
            self.sock.close()
            raise

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, data):
        view = memoryview(data)
        while len(view):
            n = self.sock.send(view)
            view = view[n:]

    def request(self, method, path, headers=(), body=None):
        lines = ["%s %s HTTP/1.1" % (method, path), "Host: " + self.host]
        lines.extend(headers)
        if body is not None:
            lines.append("Content-Length: %d" % len(body))
        self.send(("\r\n".join(lines) + "\r\n\r\n").encode())
        if body:
            self.send(body)

    def _more(self):
        data = self.sock.recv(self.chunk)
        if not data:
            raise OSError(104)  # closed by the node
        return data

    def head(self, limit=2048):
        """Status and headers (lower-case names) of the answer."""
        buf = b""
        while True:
            end = buf.find(b"\r\n\r\n")
            if end >= 0:
                break
            if len(buf) > limit:
                raise HeraldError("bad_response", "answer head too long")
            buf += self._more()
        self.pending = buf[end + 4 :]
        lines = buf[:end].decode().split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return status, headers

    def recv_exact(self, n):
        """``n`` bytes (after what the head left)."""
        out = bytearray(n)
        view = memoryview(out)
        got = 0
        if self.pending:
            got = min(n, len(self.pending))
            view[:got] = self.pending[:got]
            self.pending = self.pending[got:]
        while got < n:
            data = self.sock.recv(min(self.chunk, n - got))
            if not data:
                raise OSError(104)
            view[got : got + len(data)] = data
            got += len(data)
        return out

    def body_chunks(self, headers):
        """The answer's body in pieces (Content-Length, chunked, or to EOF)."""
        if "content-length" in headers:
            left = int(headers["content-length"])
            while left > 0:
                piece = self.recv_exact(min(left, self.chunk))
                left -= len(piece)
                yield piece
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                line = b""
                while not line.endswith(b"\r\n"):
                    line += self.recv_exact(1)
                size = int(line.strip().split(b";")[0], 16)
                if size == 0:
                    return
                while size > 0:
                    piece = self.recv_exact(min(size, self.chunk))
                    size -= len(piece)
                    yield piece
                self.recv_exact(2)
        else:
            if self.pending:
                yield self.pending
                self.pending = b""
            while True:
                data = self.sock.recv(self.chunk)
                if not data:
                    return
                yield data

    def body(self, headers, limit):
        out = b""
        for piece in self.body_chunks(headers):
            out += piece
            if len(out) > limit:
                raise HeraldError("too_large", "answer over %d bytes" % limit)
        return out


def _payload(msg):
    """A delivered message as handed over: a binary one
    (``"encoding":"base64"``) with ``data`` as ``bytes``."""
    if msg.get("encoding") == "base64":
        del msg["encoding"]
        msg["data"] = a2b_base64(msg["data"])
    return msg


def _error_of(status, body):
    try:
        err = json.loads(body)["error"]
        return err["code"], err.get("message", "")
    except (ValueError, KeyError, TypeError):
        return "http_%d" % status, ""


# -- the long-poll answer, one message at a time ----------------------------------


class _AnswerScanner:
    """Splits ``{"messages":[{..},{..}],"cursor":..}`` as it arrives: each
    message is decoded on its own (at most ``limit`` bytes held), then the
    rest of the answer (cursor, gaps, client_id)."""

    def __init__(self, limit):
        self.limit = limit
        self.state = 0  # 0 before the array, 1 between items, 2 in an item, 3 after it
        self.buf = bytearray()
        self.depth = 0
        self.in_str = False
        self.esc = False

    def feed(self, chunk, out):
        for b in chunk:
            st = self.state
            if st == 2:
                self.buf.append(b)
                if len(self.buf) > self.limit:
                    raise HeraldError("too_large", "a message over %d bytes" % self.limit)
                if self.in_str:
                    if self.esc:
                        self.esc = False
                    elif b == 92:  # backslash
                        self.esc = True
                    elif b == 34:
                        self.in_str = False
                elif b == 34:
                    self.in_str = True
                elif b == 123 or b == 91:  # { [
                    self.depth += 1
                elif b == 125 or b == 93:  # } ]
                    self.depth -= 1
                    if self.depth == 0:
                        out.append(json.loads(self.buf))
                        self.buf = bytearray()
                        self.state = 1
            elif st == 1:
                if b == 123:
                    self.buf.append(b)
                    self.depth = 1
                    self.state = 2
                elif b == 93:
                    self.state = 3
            elif st == 0:
                self.buf.append(b)
                if b == 91:  # the array of `{"messages":[`
                    if b'"messages"' not in self.buf:
                        raise HeraldError("bad_response", "no messages in the poll answer")
                    self.buf = bytearray()
                    self.state = 1
                elif len(self.buf) > 64:
                    raise HeraldError("bad_response", "unexpected poll answer")
            else:
                self.buf.append(b)
                if len(self.buf) > self.limit:
                    raise HeraldError("too_large", "poll answer tail over %d bytes" % self.limit)

    def rest(self):
        if self.state != 3:
            raise HeraldError("bad_response", "poll answer cut short")
        return json.loads(b'{"messages":[]' + bytes(self.buf))


# -- WebSocket frames ----------------------------------------------------------


class _WebSocket:
    """A client WebSocket on an upgraded connection: masked frames out,
    messages in (fragments reassembled up to ``limit`` bytes, pings
    answered)."""

    def __init__(self, conn, limit):
        self.conn = conn
        self.limit = limit
        self.pongs = 0

    def send(self, opcode, payload):
        mask = _random_bytes(4)
        n = len(payload)
        if n < 126:
            head = bytes((0x80 | opcode, 0x80 | n))
        elif n < 65536:
            head = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
        else:
            head = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
        body = bytearray(payload)
        for i in range(n):
            body[i] ^= mask[i & 3]
        self.conn.send(head + mask + body)

    def send_text(self, obj):
        self.send(1, json.dumps(obj).encode())

    def close(self, code=1000):
        try:
            self.send(8, code.to_bytes(2, "big"))
        except OSError:
            pass
        self.conn.close()

    def readable(self, timeout_ms):
        """Whether a frame can be read within ``timeout_ms``."""
        if self.conn.pending:
            return True
        if select is None:
            return True
        p = select.poll()
        p.register(self.conn.sock, select.POLLIN)
        return bool(p.poll(timeout_ms))

    def message(self):
        """The next text message (bytes), or ``None`` after a control frame
        outside a fragmented message (so the caller's timers run). Pings are
        answered; a close raises ``OSError`` with its code."""
        parts = None
        while True:
            b0, b1 = self.conn.recv_exact(2)
            fin, opcode, n = b0 & 0x80, b0 & 0x0F, b1 & 0x7F
            if b1 & 0x80:
                raise HeraldError("bad_response", "masked frame from the server")
            if n == 126:
                n = int.from_bytes(self.conn.recv_exact(2), "big")
            elif n == 127:
                n = int.from_bytes(self.conn.recv_exact(8), "big")
            if opcode >= 8:  # control: never fragmented, at most 125 bytes
                payload = self.conn.recv_exact(n)
                if opcode == 9:
                    self.send(10, payload)
                    self.pongs += 1
                elif opcode == 8:
                    code = int.from_bytes(payload[:2], "big") if n >= 2 else 1005
                    self.close(code if code not in (1005, 1006) else 1000)
                    raise OSError(code)
                if parts is None:
                    return None
                continue
            size = n + (len(parts) if parts is not None else 0)
            if size > self.limit:
                self.close(1009)
                raise HeraldError("too_large", "a message over %d bytes" % self.limit)
            payload = self.conn.recv_exact(n)
            if opcode in (1, 2):
                if parts is not None:
                    raise HeraldError("bad_response", "a new message inside a fragmented one")
                if fin:
                    return payload
                parts = bytearray(payload)
            elif opcode == 0:
                if parts is None:
                    raise HeraldError("bad_response", "a continuation frame with no message")
                parts += payload
                if fin:
                    return parts
            else:
                raise HeraldError("bad_response", "reserved opcode %d" % opcode)


# -- the client -------------------------------------------------------------------


class Client:
    """A Herald client for small devices.

    ``urls``: the nodes of one cluster; the client moves to the next when a
    node fails or cannot serve yet (``unavailable``), and asks a refusing
    node again only after its ``Retry-After``. ``token``: a JWT or API key
    (``Authorization: Bearer``). ``max_message``: the largest message (and
    poll answer tail, cursor included) held in memory, in bytes.
    """

    def __init__(self, urls, token=None, timeout=10, max_message=4096, backoff=(0.5, 8.0)):
        self.urls = [urls] if isinstance(urls, str) else list(urls)
        self.token = token
        self.timeout = timeout
        self.max_message = max_message
        self.backoff = backoff
        self.node = 0
        self.not_before = {}
        self.stats = {"connects": 0, "refusals": 0, "pongs": 0}

    # -- nodes --------------------------------------------------------------

    def _url(self):
        return self.urls[self.node % len(self.urls)]

    def _next_node(self, failures, refused_after=None):
        """Moves on after a failure and waits: the backoff, and at least
        until the node about to be tried may be asked again."""
        if refused_after is not None:
            self.not_before[self._url()] = _ms() + int(refused_after * 1000)
            self.stats["refusals"] += 1
        self.node += 1
        delay = _jitter(min(self.backoff[1], self.backoff[0] * (2 ** min(failures, 10))))
        wait = (self.not_before.get(self._url(), 0) - _ms()) / 1000
        _sleep(max(delay, wait))

    def _headers(self):
        return ["Authorization: Bearer " + self.token] if self.token else []

    def _refusal(self, status, headers, body):
        # 410 `kicked` (long-poll; WebSocket close 4004): the node disconnected
        # this client (admin API), a HeraldError: never retried.
        code, message = _error_of(status, body)
        if status in (503, 429):
            after = headers.get("retry-after", "1")
            raise _Unavailable(code + ": " + message, float(after) if after.isdigit() else 1.0)
        raise HeraldError(code, message)

    # -- publish --------------------------------------------------------------

    def publish(self, topic, data, key=None, tries=10):
        """Publishes ``data`` (any JSON value, or ``bytes``/``bytearray``
        sent raw as a binary message) to ``topic``; returns its seq once
        durable. Retries (other nodes too) reuse one idempotency key, so the
        message is stored once."""
        kind = "json"
        if isinstance(data, (bytes, bytearray)):
            kind = "octet-stream"
        else:
            data = json.dumps(data).encode()
        key = key or "mp-" + "".join("%02x" % b for b in _random_bytes(12))
        path = "/v1/topics/%s/messages" % _quote(topic)
        headers = ["Content-Type: application/" + kind, "Idempotency-Key: " + key, "Connection: close"]
        headers += self._headers()
        failure = None
        for attempt in range(tries):
            conn = None
            try:
                conn = _Conn(self._url(), self.timeout)
                conn.request("POST", path, headers, data)
                status, h = conn.head()
                answer = conn.body(h, 1024)
                if status == 200:
                    return json.loads(answer)["seq"]
                if status in (503, 429) or status >= 500:
                    failure = _error_of(status, answer)
                    after = h.get("retry-after")
                    self._next_node(attempt, float(after) if after and after.isdigit() else None)
                    continue
                code, message = _error_of(status, answer)
                raise HeraldError(code, message)
            except OSError as e:
                failure = e
                self._next_node(attempt)
            finally:
                if conn is not None:
                    conn.close()
        raise HeraldError("unavailable", "publish failed on every node: %r" % (failure,))

    # -- long-poll -------------------------------------------------------------

    def poll(self, patterns, handler, cursor=None, timeout_ms=20000, count=None, run_for=None):
        """Subscribes to ``patterns`` (a list, or one pattern) over long-poll
        and calls ``handler(item)`` for every message (``{"type":"message",
        "topic","seq","ts","data"}``, ``data`` as ``bytes`` for a binary
        message) and gap (``{"type":"gap","topic","from","to"}``), in seq
        order per topic, once each — across reconnects and nodes. Without
        ``cursor`` it starts live. A pattern the node ended (admin API) is
        dropped from ``patterns`` and reported as ``{"type":"unsubscribed",
        "topic":pattern}``; a disconnect by the node raises
        ``HeraldError("kicked")`` (not retried).

        Returns the cursor after the last item handled (keep it, e.g. in
        flash, to resume later) once ``count`` messages were handled,
        ``run_for`` seconds passed, or ``handler`` returned ``False``.
        """
        if isinstance(patterns, str):
            patterns = [patterns]
        state = _PollState(cursor)
        t0 = _ms()
        failures = 0
        while True:
            if run_for is not None and _since(t0) >= run_for * 1000:
                return state.cursor()
            wait = timeout_ms
            if run_for is not None:
                wait = max(0, min(wait, int(run_for * 1000) - _since(t0)))
            try:
                stop = self._poll_once(patterns, state, handler, wait, count)
                failures = 0
                if stop:
                    return state.cursor()
            except _Unavailable as e:
                self._next_node(failures, e.after)
                failures += 1
            except OSError:
                self._next_node(failures)
                failures += 1

    def _poll_once(self, patterns, state, handler, wait_ms, count):
        query = ["topic=" + _quote(p) for p in patterns]
        cur = state.server
        if cur is not None:
            query.append("cursor=" + _quote(cur))
        query.append("timeout_ms=%d" % wait_ms)
        if state.client_id:
            query.append("client_id=" + _quote(state.client_id))
        conn = _Conn(self._url(), self.timeout + wait_ms / 1000)
        try:
            conn.request("GET", "/v1/poll?" + "&".join(query), ["Connection: close"] + self._headers())
            status, headers = conn.head()
            if status != 200:
                self._refusal(status, headers, conn.body(headers, 1024))
            self.stats["connects"] += 1
            scanner = _AnswerScanner(self.max_message)
            items = []
            stop = False
            for piece in conn.body_chunks(headers):
                scanner.feed(piece, items)
                while items:
                    msg = items.pop(0)
                    # After a stop the rest is read (one message at a time)
                    # only for the gaps at its end.
                    if not stop and state.new(msg["topic"], msg["seq"]):
                        msg["type"] = "message"
                        state.handled += 1
                        stop = handler(_payload(msg)) is False or (count is not None and state.handled >= count)
            rest = scanner.rest()
            for p in rest.get("unsubscribed") or ():
                if p in patterns:
                    patterns.remove(p)
                    stop = handler({"type": "unsubscribed", "topic": p}) is False or stop
            for gap in rest.get("gaps") or ():
                # Gaps come after the messages; each lies before the
                # answer's messages of its topic. After a stop, only those
                # before what was handled are due now.
                if state.gap_new(gap["topic"], gap["to"], stop):
                    gap["type"] = "gap"
                    stop = handler(gap) is False or stop
            if not stop:
                state.adopt(rest["cursor"], rest.get("client_id"))
            return stop
        finally:
            conn.close()

    # -- WebSocket ---------------------------------------------------------------

    def listen(self, patterns, handler, since=None, count=None, run_for=None, ping_every=20, idle=60):
        """Subscribes to ``patterns`` over one WebSocket and calls
        ``handler(item)`` like :meth:`poll`. ``since``: ``{pattern: seq}``
        for concrete topics, ``{pattern: cursor}`` for any pattern (what
        this method returned before). After a reconnect every pattern
        resumes where it was, with no gap and no duplicate. Every
        ``ping_every`` seconds an application ping asks the node for its
        floor, which keeps cursors short (``None``: never; the node's own
        WebSocket pings are answered regardless). A connection silent for
        ``idle`` seconds (the node pings every 15 s) is replaced.

        Returns ``{pattern: seq or cursor}`` to resume from, once ``count``
        messages were handled, ``run_for`` seconds passed, or ``handler``
        returned ``False``. Binary messages arrive with ``data`` as
        ``bytes``. A pattern the node ended (admin API) is reported as
        ``{"type":"unsubscribed","topic":pattern}`` and not subscribed again;
        a disconnect by the node (close 4004) raises ``HeraldError("kicked")``.
        """
        if isinstance(patterns, str):
            patterns = [patterns]
        # Wildcards first: a concrete topic subscribed before a wildcard
        # matching it would fix the topic's position on the connection.
        subs = [_WsSub(p, (since or {}).get(p)) for p in sorted(patterns, key=_concrete)]
        t0 = _ms()
        handled = [0]
        failures = 0
        while True:
            try:
                if self._listen_once(subs, handler, count, run_for, t0, ping_every, idle, handled):
                    return dict((s.pattern, s.position()) for s in subs)
                failures = 0
            except _Unavailable as e:
                self._next_node(failures, e.after)
                failures += 1
            except OSError as e:
                code = e.args[0] if e.args else 0
                if code == 4004:
                    raise HeraldError("kicked", "disconnected by the server")
                # 1012: the node is draining; 1001: going away.
                self._next_node(failures, 1.0 if code in (1001, 1012) else None)
                failures += 1
            if run_for is not None and _since(t0) >= run_for * 1000:
                return dict((s.pattern, s.position()) for s in subs)

    def _listen_once(self, subs, handler, count, run_for, t0, ping_every, idle, handled):
        # A reconnect needs a few contiguous KiB (the handshake's SHA-1, the
        # socket buffers): collect first, so a fragmented heap still has them.
        gc.collect()
        conn = _Conn(self._url(), self.timeout)
        ws = None
        try:
            key = b2a_base64(_random_bytes(16)).strip()
            # Binary messages as base64 text frames: one decoder for all.
            conn.request(
                "GET",
                "/v1/ws?binary=base64",
                ["Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Key: " + key.decode(), "Sec-WebSocket-Version: 13"]
                + self._headers(),
            )
            status, headers = conn.head()
            if status != 101:
                self._refusal(status, headers, conn.body(headers, 1024))
            if headers.get("sec-websocket-accept", "").encode() != accept_key(key):
                raise HeraldError("bad_response", "wrong Sec-WebSocket-Accept")
            ws = _WebSocket(conn, self.max_message)
            for s in subs:
                ws.send_text(s.op())
            self.stats["connects"] += 1
            last_ping = last_frame = _ms()
            while True:
                if run_for is not None and _since(t0) >= run_for * 1000:
                    return True
                if ping_every is not None and _since(last_ping) >= ping_every * 1000:
                    ws.send_text({"op": "ping", "id": "floor"})
                    last_ping = _ms()
                if not ws.readable(500):
                    if _since(last_frame) > idle * 1000:
                        raise OSError(4002)  # the link is dead
                    continue
                text = ws.message()
                last_frame = _ms()
                if text is None:
                    continue
                frame = json.loads(text)
                kind = frame.get("type")
                if kind == "message" or kind == "gap":
                    new = False
                    for s in subs:
                        if matches(s.pattern, frame["topic"]):
                            new = s.take(frame) or new
                    if new:
                        if kind == "message":
                            handled[0] += 1
                            _payload(frame)
                        if handler(frame) is False or (count is not None and handled[0] >= count):
                            return True
                elif kind in ("subscribed", "unsubscribed"):
                    # Ids are the patterns; an `unsubscribed` without one is
                    # the admin API ending it: not subscribed again.
                    for s in subs:
                        if s.pattern == frame.get("id", frame["topic"]):
                            if kind == "subscribed":
                                s.started(frame.get("cursor"))
                            else:
                                subs.remove(s)
                                if handler(frame) is False:
                                    return True
                            break
                elif kind == "pong":
                    if frame.get("floor"):
                        for s in subs:
                            s.raise_floor(frame["floor"])
                elif kind == "error" and frame.get("id") is not None:
                    code, message = frame.get("code", ""), frame.get("message", "")
                    if code in FATAL:
                        raise HeraldError(code, message)
                    # `unavailable`: the node lost its cluster since the
                    # connection opened.
                    raise _Unavailable(code + ": " + message, 1.0)
        finally:
            if ws is not None:
                self.stats["pongs"] += ws.pongs
                ws.close()
            else:
                conn.close()


class _PollState:
    """Where a long-poll subscription stands: the last complete answer's
    cursor, and what was handled of the answer being read. An answer cut
    short is asked for again from the same cursor; what was handled of it
    is dropped the second time."""

    def __init__(self, cursor):
        self.server = None
        self.server_pos = {}
        self.handled_seq = {}
        self.client_id = None
        self.handled = 0
        if cursor is not None:
            self.adopt(cursor, None)

    def new(self, topic, seq):
        last = self.handled_seq.get(topic, self.server_pos.get(topic))
        if last is not None and seq <= last:
            return False
        self.handled_seq[topic] = seq
        return True

    def gap_new(self, topic, to, stopped):
        if stopped:
            return to < self.handled_seq.get(topic, 0)
        last = self.server_pos.get(topic)
        return last is None or to > last

    def adopt(self, cursor, client_id):
        self.server = cursor
        self.server_pos = _parse_cursor(cursor)[1]
        self.handled_seq = {}
        if client_id:
            self.client_id = client_id

    def cursor(self):
        """Where the handled items end (protocol-spec §9.3: each handled
        topic at its seq, the floor unchanged)."""
        if self.server is None or not self.handled_seq:
            return self.server
        floor, pos = _parse_cursor(self.server)
        pos.update(self.handled_seq)
        return _cursor(floor, pos)


class _WsSub:
    """One pattern on the WebSocket: ``since`` (concrete) or a cursor of
    ``{topic: (seq, ts)}`` and a floor (any pattern), per protocol-spec §9.3."""

    def __init__(self, pattern, start):
        self.pattern = pattern
        self.concrete = _concrete(pattern)
        self.floor = None
        self.seen = {}
        if isinstance(start, int):
            self.seen[pattern] = (start, 0)
            self.floor = 0
        elif isinstance(start, str):
            self.floor, pos = _parse_cursor(start)
            for t in pos:
                self.seen[t] = (pos[t], 0)

    def op(self):
        op = {"op": "subscribe", "id": self.pattern, "topic": self.pattern}
        if self.floor is not None:
            if self.concrete and self.pattern in self.seen:
                op["since"] = self.seen[self.pattern][0]
            else:
                op["cursor"] = self.position()
        return op

    def started(self, cursor):
        """The `subscribed` reply: a live start (a re-subscribe keeps ours)."""
        if self.floor is not None or not cursor:
            return
        self.floor, pos = _parse_cursor(cursor)
        for t in pos:
            # A wildcard's `~0` entries are topics about to be replayed.
            if (pos[t] > 0 or self.concrete) and pos[t] >= self.seen.get(t, (0, 0))[0]:
                self.seen[t] = (pos[t], 0)

    def take(self, frame):
        """Records a message or gap; whether it is new for this pattern."""
        topic = frame["topic"]
        seq = frame["seq"] if frame["type"] == "message" else frame["to"]
        last = self.seen.get(topic)
        if last is not None and seq <= last[0]:
            return False
        self.seen[topic] = (seq, frame.get("ts", last[1] if last else 0))
        return True

    def raise_floor(self, floor):
        """A `pong` floor: topics whose last message is older need no entry."""
        if self.floor is None or floor <= self.floor:
            return
        self.floor = floor
        for t in list(self.seen):
            if self.seen[t][1] < floor and not (self.concrete and t == self.pattern):
                del self.seen[t]

    def position(self):
        if self.floor is None:
            return None
        if self.concrete and self.pattern in self.seen and self.floor == 0:
            return self.seen[self.pattern][0]
        return _cursor(self.floor, dict((t, self.seen[t][0]) for t in self.seen))
