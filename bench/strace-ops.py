#!/usr/bin/env python3
# Syscalls per operation of `berth run --threads 1 --bulk-loops 0` under `strace -c -f`: each
# operation N1 and N2 times, berth started afresh for each, and the difference of every
# syscall's count over N2 - N1 (start-up and shutdown cancel out). Operations:
#   conn  a new TCP connection: connect, 64 B request, 64 B response, close
#   rr    a 64 B request/response on one keep-alive TCP connection
#   udp   a 64 B UDP request/response on one flow
#   flow  the same, each from a new client socket (a new flow in berth: DNS-style)
# Usage: bench/strace-ops.py BERTH [N1 N2]   (as root or with ptrace rights; loopback only)
# A peer instead of berth: STRACE_OPS_COMMAND='haproxy -db -f cfg' STRACE_OPS=conn,rr bench/strace-ops.py - N1 N2,
# the command listening on 127.0.0.1:25411 (TCP, to 25401) and 25412 (UDP, to 25402).
import os, re, shlex, signal, socket, subprocess, sys, tempfile, threading, time

binary = sys.argv[1]
n1, n2 = (int(sys.argv[2]), int(sys.argv[3])) if len(sys.argv) > 3 else (200, 1200)
wanted = os.environ.get("STRACE_OPS", "conn,rr,udp,flow").split(",")
BACK_TCP, BACK_UDP, FRONT_TCP, FRONT_UDP = 25401, 25402, 25411, 25412


def tcp_echo():
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", BACK_TCP))
    ls.listen(128)

    def serve(c):
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while True:
            d = c.recv(65536)
            if not d:
                break
            c.sendall(d)
        c.close()

    while True:
        c, _ = ls.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()


def udp_echo():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", BACK_UDP))
    while True:
        d, a = s.recvfrom(2048)
        s.sendto(d, a)


threading.Thread(target=tcp_echo, daemon=True).start()
threading.Thread(target=udp_echo, daemon=True).start()
msg = b"x" * 64


def recv_exact(s, n):
    got = 0
    while got < n:
        d = s.recv(n - got)
        if not d:
            raise RuntimeError("closed early")
        got += len(d)


def op_conn(n):
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", FRONT_TCP))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(msg)
        recv_exact(s, 64)
        s.close()


def op_rr(n):
    s = socket.create_connection(("127.0.0.1", FRONT_TCP))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for _ in range(n):
        s.sendall(msg)
        recv_exact(s, 64)
    s.close()


def op_udp(n):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(1)
    s.connect(("127.0.0.1", FRONT_UDP))
    for _ in range(n):
        s.send(msg)
        s.recv(2048)
    s.close()


def op_flow(n):
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(1)
        s.connect(("127.0.0.1", FRONT_UDP))
        s.send(msg)
        s.recv(2048)
        s.close()


def counts(op, n):
    out = tempfile.mktemp(prefix="strace-ops-")
    command = shlex.split(os.environ.get("STRACE_OPS_COMMAND", "")) or [
        binary, "run", "--mode", "userspace", "--threads", "1", "--bulk-loops", "0",
        "-p", f"127.0.0.1:{FRONT_TCP}:{BACK_TCP}", "-p", f"127.0.0.1:{FRONT_UDP}:{BACK_UDP}/udp", "127.0.0.1"]
    p = subprocess.Popen(["strace", "-c", "-f", "-o", out] + command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(400):
        try:
            socket.create_connection(("127.0.0.1", FRONT_TCP)).close()
            break
        except OSError:
            time.sleep(0.05)
    time.sleep(0.3)
    op(n)
    time.sleep(0.5)  # the relay closes what the last operation left
    # SIGTERM to berth itself (strace, which started it, does not pass its own on).
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                stat = open(f"/proc/{pid}/stat").read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == p.pid:
                os.kill(int(pid), signal.SIGTERM)
    p.wait()
    table = {}
    for line in open(out):
        m = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:(\d+)\s+)?(\w+)\s*$", line)
        if m and m.group(3) != "total":
            table[m.group(3)] = int(m.group(1))
            if m.group(2):
                table[m.group(3) + " (failed)"] = int(m.group(2))
    os.unlink(out)
    return table


for name, op in [("conn", op_conn), ("rr", op_rr), ("udp", op_udp), ("flow", op_flow)]:
    if name not in wanted:
        continue
    a, b = counts(op, n1), counts(op, n2)
    per = {k: (b.get(k, 0) - a.get(k, 0)) / (n2 - n1) for k in set(a) | set(b)}
    per = {k: v for k, v in per.items() if abs(v) >= 0.005}
    total = sum(v for k, v in per.items() if not k.endswith("(failed)"))
    print(f"{name}: {total:.2f} syscalls per operation ({n1} and {n2} operations)")
    for k, v in sorted(per.items(), key=lambda kv: -kv[1]):
        print(f"  {k:18} {v:6.2f}")
    sys.stdout.flush()
