#!/usr/bin/env python3
"""Memory that default history (100 publications per channel) costs.

    python3 loadtest/history-memory.py embedded|redis CHANNELS [HERALD_BINARY]

Starts Herald (embedded, or over a fresh redis-server on a free loopback
port), publishes 100 publications of 128-byte payloads on each of CHANNELS
global channels through the server API, and prints the growth per channel:
the gateway's RSS (embedded) or Redis's used_memory (redis). Stops what it
started.
"""
import http.client, json, os, socket, subprocess, sys, tempfile, time

CHANNELS, PER = int(sys.argv[2]), 100
mode = sys.argv[1]
target = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/herald-target"))
binary = sys.argv[3] if len(sys.argv) > 3 else os.path.join(target, "debug", "herald")
def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p
cfg = tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False)
cfg.write('connections_per_second_per_ip = 0\n[[apps]]\nid = "m"\napi_keys = ["key-m"]\nops_per_second = 0\npresence = false\n')
cfg.close()
procs = []
args = [binary, "serve", "--listen", "127.0.0.1:0", "--config", cfg.name]
if mode == "redis":
    rport = free_port()
    procs.append(subprocess.Popen(["redis-server", "--port", str(rport), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL))
    time.sleep(0.5)
    args += ["--redis", f"redis://127.0.0.1:{rport}"]
h = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
procs.append(h)
line = h.stdout.readline()
addr = line.split("http://")[1].split()[0]
host, port = addr.split(":")
time.sleep(1.5)
def rss(pid):
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmRSS:"): return int(l.split()[1]) * 1024
def redis_mem():
    out = subprocess.run(["redis-cli", "-p", str(rport), "info", "memory"], capture_output=True, text=True).stdout
    return int([l for l in out.splitlines() if l.startswith("used_memory:")][0].split(":")[1])
before = rss(h.pid) if mode == "embedded" else redis_mem()
conn = http.client.HTTPConnection(host, int(port))
payload = "x" * 120  # {"p":"x...x"}: a 128-byte JSON payload
for c in range(CHANNELS):
    for i in range(PER):
        body = json.dumps({"channel": f"ch{c}", "payload": {"p": payload}}, separators=(",", ":"))
        conn.request("POST", "/api/v1/publish/global", body, {"x-api-key": "key-m", "content-type": "application/json"})
        r = conn.getresponse(); r.read()
        assert r.status == 200, r.status
after = rss(h.pid) if mode == "embedded" else redis_mem()
print(f"{mode}: {CHANNELS} channels x {PER} publications of 128-byte payloads: {(after-before)/CHANNELS:.0f} bytes per channel ({(after-before)/CHANNELS/PER:.0f} per publication)")
for p in procs:
    p.terminate()
    p.wait()
os.unlink(cfg.name)
