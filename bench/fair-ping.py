#!/usr/bin/env python3
# The issue-22 table by hand: a 1-byte ping-pong through one published port beside iperf3
# uploads through another port of the same forwarder, against docker-proxy (a process per
# port) and direct. Targets run one after another, interleaved, --repeat times each.
# Usage: bench/fair-ping.py BERTH [--before OLD_BERTH] [--repeat 3] [--pings 1000] [--streams 0,1,8]
# Targets: direct, docker-proxy, berth (its defaults), berth-t1 (--threads 1), and with --before
# old-berth and old-berth-t1 (another build, in the same run).
import argparse, json, os, socket, subprocess, sys, threading, time

ap = argparse.ArgumentParser()
ap.add_argument("berth")
ap.add_argument("--repeat", type=int, default=3)
ap.add_argument("--pings", type=int, default=1000)
ap.add_argument("--streams", default="0,1,8")
ap.add_argument("--targets", default="direct,docker-proxy,berth-t1,berth")
ap.add_argument("--extra", default="", help="extra berth options")
ap.add_argument("--before", help="another berth binary, as the old-berth targets")
args = ap.parse_args()

ECHO, IPERF = 15201, 15202      # backends
P_ECHO, P_IPERF = 15211, 15212  # published ports

def echo_server():
    ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", ECHO)); ls.listen(64)
    def serve(c):
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while True:
            d = c.recv(64)
            if not d: break
            c.sendall(d)
        c.close()
    while True:
        c, _ = ls.accept(); threading.Thread(target=serve, args=(c,), daemon=True).start()

threading.Thread(target=echo_server, daemon=True).start()
iperf = subprocess.Popen(["iperf3", "-s", "-p", str(IPERF)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
time.sleep(0.3)

def start(target):
    if target == "direct": return [], ECHO, IPERF
    if target == "docker-proxy":
        # fd 3 is its readiness pipe (dockerd's): /dev/null here.
        ps = [subprocess.Popen(["sh", "-c", 'exec "$0" "$@" 3>/dev/null', "/usr/local/bin/docker-proxy", "-proto", "tcp", "-host-ip", "127.0.0.1",
                                "-host-port", str(h), "-container-ip", "127.0.0.1", "-container-port", str(c)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
              for h, c in ((P_ECHO, ECHO), (P_IPERF, IPERF))]
    else:
        binary = args.before if target.startswith("old-") else args.berth
        cmd = [binary, "run", "--mode", "userspace", "-p", f"127.0.0.1:{P_ECHO}:{ECHO}", "-p", f"127.0.0.1:{P_IPERF}:{IPERF}"]
        if target.endswith("-t1"): cmd += ["--threads", "1"]
        cmd += (args.extra.split() if binary == args.berth else []) + ["127.0.0.1"]
        ps = [subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    # Only the echo port is probed: iperf3's server takes any connection for a test's control one.
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", P_ECHO)).close(); break
        except OSError: time.sleep(0.05)
    time.sleep(0.2)
    return ps, P_ECHO, P_IPERF

def ping(port, n):
    s = socket.create_connection(("127.0.0.1", port)); s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    out = []
    for _ in range(n):
        t = time.perf_counter_ns(); s.send(b"x")
        if s.recv(1) != b"x": raise SystemExit("ping: bad echo")
        out.append(time.perf_counter_ns() - t); time.sleep(0.001)
    s.close(); out.sort(); return out

def pct(v, p): return v[min(len(v) - 1, int(len(v) * p / 100))] / 1000

rows = {}
for rep in range(args.repeat):
    for target in args.targets.split(","):
        for streams in [int(x) for x in args.streams.split(",")]:
            for attempt in range(3):  # iperf3 sometimes refuses a test: again
                ps, pe, pi = start(target)
                bulk = None
                if streams:
                    bulk = subprocess.Popen(["iperf3", "-c", "127.0.0.1", "-p", str(pi), "-t", "4", "-P", str(streams), "-J"],
                                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
                    time.sleep(0.8)
                v = ping(pe, args.pings)
                gbps = None
                if bulk:
                    j = json.loads(bulk.communicate()[0] or b"{}")
                    gbps = j.get("end", {}).get("sum_received", {}).get("bits_per_second", 0) / 1e9
                for p in ps: p.terminate()
                for p in ps: p.wait()
                if streams and not gbps:
                    print(f"rep {rep} {target} bulk {streams}: iperf3 failed, again", flush=True); time.sleep(1); continue
                r = (pct(v, 50), pct(v, 99), v[-1] / 1000, gbps)
                rows.setdefault((target, streams), []).append(r)
                print(f"rep {rep} {target:13} bulk {streams}: p50 {r[0]:8.0f} µs  p99 {r[1]:8.0f} µs  max {r[2]:8.0f} µs"
                      + (f"  bulk {gbps:.2f} Gbit/s" if gbps is not None else ""), flush=True)
                break
iperf.terminate()
print("\n| target | bulk streams | ping p50 µs | ping p99 µs | max µs | bulk Gbit/s |\n| --- | ---: | ---: | ---: | ---: | ---: |")
for (target, streams), rs in rows.items():
    def span(i, f="%.0f"):
        xs = sorted(r[i] for r in rs if r[i] is not None)
        if not xs: return "-"
        med = xs[len(xs) // 2]
        return (f % med) + (f" ({f % xs[0]}–{f % xs[-1]})" if len(xs) > 1 else "")
    print(f"| {target} | {streams} | {span(0)} | {span(1)} | {span(2)} | {span(3, '%.2f') if streams else '-'} |")
print("load average:", open("/proc/loadavg").read().split()[:3])
