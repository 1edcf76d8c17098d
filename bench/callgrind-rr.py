#!/usr/bin/env python3
# Instructions per 64-byte request/response round trip through `berth run --threads 1` under
# callgrind (all of berth's user-space instructions: run twice with different N and take the
# difference). Usage: bench/callgrind-rr.py BERTH N OUT  (valgrind cannot read the debug info of
# the static release binary: strip a copy first, `strip -o /tmp/berth-stripped .build/release/berth`).
import socket, subprocess, sys, threading, time, signal
binary, n, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); ls.bind(("127.0.0.1", 15301)); ls.listen(8)
def echo():
    c, _ = ls.accept(); c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while True:
        d = c.recv(65536)
        if not d: break
        c.sendall(d)
threading.Thread(target=echo, daemon=True).start()
p = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", binary, "run", "--mode", "userspace",
                      "--threads", "1", "--bulk-loops", "0", "-p", "127.0.0.1:15311:15301", "127.0.0.1"],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
for _ in range(400):
    try: s = socket.create_connection(("127.0.0.1", 15311)); break
    except OSError: time.sleep(0.05)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
msg = b"x" * 64
for _ in range(n):
    s.sendall(msg); got = 0
    while got < 64: got += len(s.recv(64 - got))
s.close(); time.sleep(0.5); p.send_signal(signal.SIGTERM); p.wait()
tot = [l for l in open(out) if l.startswith("summary:") or l.startswith("totals:")]
print(n, tot[0].split()[1], flush=True)
