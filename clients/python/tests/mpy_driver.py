# Runs the MicroPython client (clients/micropython/herald.py) for the tests
# in test_micropython.py, on the real MicroPython interpreter. One command
# per run; every item handled is printed as a JSON line, then a last line
# {"done": ...} with the position to resume from, the client's counters and
# the heap in use after a collection.
#
#   micropython mpy_driver.py CLIENT_DIR publish URLS TOPIC JSON...
#   micropython mpy_driver.py CLIENT_DIR poll URLS PATTERN CURSOR|- COUNT
#   micropython mpy_driver.py CLIENT_DIR listen URLS PATTERNS SINCE_JSON|- COUNT RUN_FOR PING_EVERY|- MAX_MESSAGE
#
# URLS and PATTERNS are comma-separated. A publish argument ``hex:HEX`` or
# ``file:PATH`` (arguments over ~250 bytes crash the unix port at start)
# publishes those bytes raw; binary data handled is printed as {"hex": ..}.
import gc
import json
import sys
from binascii import hexlify, unhexlify

sys.path.append(sys.argv[1])
import herald  # noqa: E402

cmd, urls = sys.argv[2], sys.argv[3].split(",")
peak = [0]


def show(item):
    if isinstance(item.get("data"), (bytes, bytearray)):
        item["data"] = {"hex": hexlify(item["data"]).decode()}
    print(json.dumps(item))
    used = gc.mem_alloc()
    if used > peak[0]:
        peak[0] = used


def opt(text):
    return None if text == "-" else text


try:
    if cmd == "publish":
        c = herald.Client(urls, timeout=5, backoff=(0.2, 1.0))
        for text in sys.argv[5:]:
            if text.startswith("hex:"):
                data = unhexlify(text[4:])
            elif text.startswith("file:"):
                with open(text[5:], "rb") as f:
                    data = f.read()
            else:
                data = json.loads(text)
            show({"seq": c.publish(sys.argv[4], data)})
        result = None
    elif cmd == "poll":
        c = herald.Client(urls, timeout=5, backoff=(0.2, 1.0))
        result = c.poll(sys.argv[4].split(","), show, cursor=opt(sys.argv[5]), count=int(sys.argv[6]), timeout_ms=3000)
    else:
        since = opt(sys.argv[5])
        ping = opt(sys.argv[8])
        c = herald.Client(urls, timeout=5, backoff=(0.2, 1.0), max_message=int(sys.argv[9]))
        count = int(sys.argv[6])
        result = c.listen(
            sys.argv[4].split(","),
            show,
            since=json.loads(since) if since else None,
            count=count if count > 0 else None,
            run_for=float(sys.argv[7]),
            ping_every=float(ping) if ping else None,
        )
    gc.collect()
    print(json.dumps({"done": result, "stats": c.stats, "peak": peak[0], "in_use": gc.mem_alloc()}))
except herald.HeraldError as e:
    print(json.dumps({"error": e.code, "message": str(e)}))
    sys.exit(3)
