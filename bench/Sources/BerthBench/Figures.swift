// The figures: what each measures, its unit, and which way is better. A group (the name
// `--figures` takes) yields one or more rows of the table.

import BenchReport

enum FigureGroup: String, CaseIterable, Sendable {
    case tcpBulk = "tcp-bulk"
    case tcpConnections = "tcp-connrate"
    case tcpRequestResponse = "tcp-rr"
    case udpDatagrams = "udp-pps"
    case udpRequestResponse = "udp-rr"
    case udpDNS = "udp-dns"
    case tcpFairness = "tcp-fair"
    case memoryIdle = "mem-idle"
    case memoryConnections = "mem-conns"
    case memoryPorts = "mem-ports"

    var isMemory: Bool { rawValue.hasPrefix("mem-") }
}

struct Figure: Sendable {
    let id: String
    let group: FigureGroup
    let title: String
    let unit: String
    let higherIsBetter: Bool
    /// The target ratios are taken to when it is not the group's: CPU per operation is held
    /// against a peer (HAProxy), since direct has no forwarder to spend it.
    var peer: String? = nil
    /// Ratios are to `direct`, except for memory (direct has no forwarder): to docker-proxy;
    /// CPU per operation: to its `peer`.
    var ratioBase: String { peer ?? (group.isMemory ? "docker-proxy" : "direct") }
    /// Whether `direct` has a value at all.
    var hasDirect: Bool { !group.isMemory && peer == nil }
}

struct FigurePlan {
    let heldConnections: Int
    let portCounts: [Int]
    let connectConcurrency: Int
    /// udp-dns: one-shot exchanges, each from a new source port.
    var dnsExchanges = 20_000
    /// tcp-fair: berth's `--threads` (nil: its default).
    var fairThreads: Int? = 1

    func figures(_ group: FigureGroup) -> [Figure] {
        func f(_ id: String, _ title: String, _ unit: String, _ higher: Bool) -> Figure {
            Figure(id: id, group: group, title: title, unit: unit, higherIsBetter: higher)
        }
        /// The forwarder's own CPU time (all its processes' utime + stime) over a measurement,
        /// per `per` of its operations; ids end in CPUCost.idSuffix.
        func cpu(_ id: String, _ what: String, _ per: String, peer: String = "haproxy") -> Figure {
            Figure(
                id: id + CPUCost.idSuffix,
                group: group,
                title: "Forwarder CPU time, \(what)",
                unit: "CPU ms/\(per)",
                higherIsBetter: false,
                peer: peer
            )
        }
        switch group {
        case .tcpBulk:
            return [
                f("tcp-bulk-1", "TCP bulk, 1 stream", "Gbit/s", true),
                f("tcp-bulk-8", "TCP bulk, 8 streams", "Gbit/s", true),
                cpu("tcp-bulk-1", "TCP bulk, 1 stream", "GB"),
                cpu("tcp-bulk-8", "TCP bulk, 8 streams", "GB"),
            ]
        case .tcpConnections:
            return [
                f(
                    "tcp-connrate",
                    "TCP connections (connect, 64 B request, response, close; \(connectConcurrency) at a time)",
                    "conn/s",
                    true
                ),
                cpu("tcp-connrate", "new TCP connections (connect, 64 B each way, close)", "1000 conns"),
            ]
        case .tcpRequestResponse:
            var rows: [Figure] = []
            for conns in [1, 64] {
                for (p, name) in [("p50", "p50"), ("p99", "p99"), ("p999", "p99.9")] {
                    rows.append(
                        f(
                            "tcp-rr-\(conns)-\(p)",
                            "TCP request/response latency, \(conns == 1 ? "1 conn pinned to one CPU" : "\(conns) conns"), \(name)",
                            "µs",
                            false
                        )
                    )
                }
            }
            rows.append(f("tcp-rr-64-rps", "TCP requests/s, 64 keep-alive conns", "req/s", true))
            rows.append(cpu("tcp-rr-64", "TCP keep-alive requests, 64 conns", "1000 req"))
            return rows
        case .udpDatagrams:
            return [
                f("udp-pps", "UDP 64 B datagrams delivered (one flow, unthrottled sender)", "datagrams/s", true),
                f("udp-loss", "UDP loss at that load", "%", false),
                // HAProxy forwards no UDP: nginx is the peer here.
                cpu("udp-pps", "UDP 64 B datagrams delivered", "1000 datagrams", peer: "nginx"),
            ]
        case .udpRequestResponse:
            return [("p50", "p50"), ("p99", "p99"), ("p999", "p99.9")].map { p, name in
                f("udp-rr-\(p)", "UDP request/response latency, 1 flow pinned to one CPU, \(name)", "µs", false)
            }
        case .udpDNS:
            return [
                f(
                    "udp-dns-rate",
                    "UDP DNS-style: \(dnsExchanges) one-shot exchanges, each from a new source port, 16 at a time",
                    "answers/s",
                    true
                ),
                f("udp-dns-fds", "Peak open descriptors of the forwarder during that load", "fds", false),
            ]
        case .tcpFairness:
            var rows: [Figure] = []
            let beside = "through another port of the same forwarder"
            let modes = [
                ("alone", "alone"), ("bulk", "beside 1 bulk download \(beside)"),
                ("bulk8", "beside 8 bulk downloads \(beside)"),
            ]
            let loops = fairThreads.map { "berth --threads \($0)" } ?? "berth with its defaults"
            for (mode, what) in modes {
                for (p, name) in [("p50", "p50"), ("p99", "p99"), ("max", "max")] {
                    rows.append(
                        f(
                            "tcp-fair-\(mode)-\(p)",
                            "TCP 1-byte ping every ms, \(what) (\(loops)), \(name)",
                            "µs",
                            false
                        )
                    )
                }
            }
            rows.append(
                f("tcp-fair-bulk-gbps", "TCP bulk download, 1 stream, beside that ping (\(loops))", "Gbit/s", true)
            )
            rows.append(
                f("tcp-fair-bulk8-gbps", "TCP bulk download, 8 streams, beside that ping (\(loops))", "Gbit/s", true)
            )
            return rows
        case .memoryIdle:
            return [f("mem-idle", "Memory (RSS), idle, 1 port", "KiB", false)]
        case .memoryConnections:
            return [
                f("mem-conns", "Memory (RSS) with \(heldConnections) held connections", "KiB", false),
                f("mem-per-conn", "Memory per held connection", "KiB/conn", false),
            ]
        case .memoryPorts:
            var rows: [Figure] = []
            for n in portCounts {
                rows.append(
                    f("mem-ports-\(n)", "Memory (RSS) with \(n) published port\(n == 1 ? "" : "s")", "KiB", false)
                )
            }
            rows.append(
                f(
                    "mem-per-port",
                    "Memory per published port (\(portCounts.first ?? 1) → largest measured)",
                    "KiB/port",
                    false
                )
            )
            for n in portCounts {
                rows.append(f("ready-ports-\(n)", "Time until \(n) port\(n == 1 ? " is" : "s are") ready", "ms", false))
            }
            return rows
        }
    }
}
