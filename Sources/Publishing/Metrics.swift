// What a scrape returns (`Publisher.metrics()`), and its Prometheus text exposition
// (format 0.0.4: https://prometheus.io/docs/instrumenting/exposition_formats/), written by
// hand: a few dozen lines, no dependency, nothing linked in that a process which never
// scrapes would pay for.

import LinuxIO
import Mappings
import Netfilter
import Relay

/// One scrape of a running `Publisher`: per mapping, summed over the loops, and per process.
package struct PublisherMetrics: Sendable {
    /// One served host address of a publication (a listener per loop, counted together).
    package struct Mapping: Sendable {
        package var publication: PublicationID
        package var proto: Proto
        /// Where it listens (the port the kernel chose, for an ephemeral one).
        package var host: SocketAddress
        /// The container side.
        package var target: SocketAddress
        /// `add(_:owner:)`'s owner; nil when none was given.
        package var owner: String?
        package var counters: MappingCounters
    }

    /// One DNAT rule of the kernel path, with its map element's counters.
    package struct KernelRule: Sendable {
        package var rule: DNATRule
        package var owner: String?
        /// New connections (TCP) or flows (UDP) DNATed, and their first packets' bytes.
        package var packets: UInt64
        package var bytes: UInt64
    }

    package var mappings: [Mapping] = []
    package var kernel: [KernelRule] = []
    /// Event loops running; 0 when `run` is not running.
    package var loops = 0
    /// Loops that answered the scrape in time; the others' counters are missing.
    package var loopsAnswered = 0
    package var openDescriptors: Int?
    /// The soft RLIMIT_NOFILE.
    package var descriptorLimit: UInt64?
    /// Empty pipes kept for reuse, over all loops.
    package var pipesPooled = 0
    /// Splice pipes made because a loop's pool had none idle, over all loops. Under steady load it
    /// stops rising once the pools hold what the streams need; a count that keeps rising is a
    /// pipe2 and two fcntl per burst (pipes closed with bytes in them, or beyond a pool's limit).
    package var pipesCreated: UInt64 = 0

    package init() {}

    /// The Prometheus text exposition: `# HELP` and `# TYPE` once per metric, then its samples.
    package func prometheusText() -> String {
        var out = Exposition()
        out.gauge("berth_loops", "Event loops running.", Double(loops))
        out.gauge("berth_loops_answered", "Event loops that answered this scrape in time.", Double(loopsAnswered))
        if let openDescriptors {
            out.gauge("berth_open_fds", "File descriptors open in the process.", Double(openDescriptors))
        }
        if let descriptorLimit {
            out.gauge("berth_max_fds", "Soft limit on open file descriptors (RLIMIT_NOFILE).", Double(descriptorLimit))
        }
        out.gauge("berth_pipes_pooled", "Empty pipes kept for reuse, all loops.", Double(pipesPooled))
        out.counter(
            "berth_pipes_created_total",
            "Splice pipes made (a loop's pool had none idle), all loops.",
            Double(pipesCreated)
        )

        let tcp = mappings.filter { $0.proto == .tcp }.map { ($0.labels, $0.counters) }
        let udp = mappings.filter { $0.proto == .udp }.map { ($0.labels, $0.counters) }
        func family(
            _ rows: [(Labels, MappingCounters)],
            _ name: String,
            _ type: Exposition.Kind,
            _ help: String,
            _ value: (MappingCounters) -> Double
        ) {
            guard !rows.isEmpty else { return }
            out.header(name, type, help)
            for (labels, counters) in rows { out.sample(name, labels, value(counters)) }
        }
        func directions(
            _ rows: [(Labels, MappingCounters)],
            _ name: String,
            _ help: String,
            toBackend: (MappingCounters) -> UInt64,
            toClient: (MappingCounters) -> UInt64
        ) {
            guard !rows.isEmpty else { return }
            out.header(name, .counter, help)
            for (labels, counters) in rows {
                out.sample(name, labels + [("direction", "to_backend")], Double(toBackend(counters)))
                out.sample(name, labels + [("direction", "to_client")], Double(toClient(counters)))
            }
        }
        family(tcp, "berth_tcp_connections_accepted_total", .counter, "TCP connections accepted.") {
            Double($0.accepted)
        }
        family(tcp, "berth_tcp_connections_active", .gauge, "TCP connections open.") { Double($0.active) }
        family(tcp, "berth_tcp_connections_closed_total", .counter, "TCP connections closed, for any reason.") {
            Double($0.closed)
        }
        family(tcp, "berth_tcp_connections_refused_total", .counter, "TCP clients reset because the backend refused.") {
            Double($0.refused)
        }
        family(tcp, "berth_tcp_connections_reset_total", .counter, "TCP connections reset because one side reset.") {
            Double($0.resets)
        }
        family(
            tcp,
            "berth_tcp_connect_timeouts_total",
            .counter,
            "TCP clients reset because the backend did not answer in time."
        ) {
            Double($0.connectTimeouts)
        }
        family(
            tcp,
            "berth_tcp_half_close_timeouts_total",
            .counter,
            "Half-closed TCP connections reset after the half-close timeout."
        ) {
            Double($0.halfCloseTimeouts)
        }
        family(
            tcp,
            "berth_tcp_drain_resets_total",
            .counter,
            "TCP connections of a removed port reset when its drain time was up."
        ) {
            Double($0.drainResets)
        }
        family(tcp, "berth_tcp_connections_bulk", .gauge, "TCP connections open on a bulk loop now.") {
            Double($0.bulk)
        }
        family(
            tcp,
            "berth_tcp_moves_total",
            .counter,
            "TCP connections handed between loops: to a bulk loop, or back when quiet."
        ) {
            Double($0.moves)
        }
        directions(
            tcp,
            "berth_tcp_bytes_total",
            "TCP bytes relayed.",
            toBackend: \.bytesToBackend,
            toClient: \.bytesToClient
        )

        family(udp, "berth_udp_flows_active", .gauge, "UDP flows open.") { Double($0.flowsActive) }
        family(udp, "berth_udp_flows_created_total", .counter, "UDP flows opened.") { Double($0.flowsCreated) }
        family(udp, "berth_udp_flows_expired_total", .counter, "UDP flows closed after their idle timeout.") {
            Double($0.flowsExpired)
        }
        family(
            udp,
            "berth_udp_flows_evicted_total",
            .counter,
            "UDP flows closed to make room for a new one (--udp-max-flows reached)."
        ) { Double($0.flowsEvicted) }
        family(
            udp,
            "berth_udp_flows_answered_evicted_total",
            .counter,
            "UDP flows closed once answered (one request, its reply), beyond --udp-max-answered."
        ) { Double($0.answeredEvicted) }
        family(
            udp,
            "berth_udp_flows_assured_total",
            .counter,
            "UDP flows that went on both ways and got the long timeout (--udp-timeout)."
        ) { Double($0.flowsAssured) }
        directions(
            udp,
            "berth_udp_datagrams_total",
            "UDP datagrams relayed.",
            toBackend: \.datagramsToBackend,
            toClient: \.datagramsToClient
        )
        directions(
            udp,
            "berth_udp_bytes_total",
            "UDP payload bytes relayed.",
            toBackend: \.bytesToBackend,
            toClient: \.bytesToClient
        )
        family(udp, "berth_udp_datagrams_truncated_total", .counter, "UDP datagrams too large for the buffer, dropped.")
        {
            Double($0.truncated)
        }
        family(
            udp,
            "berth_udp_datagrams_dropped_total",
            .counter,
            "UDP datagrams dropped (full send buffer, no descriptor for a flow)."
        ) {
            Double($0.dropped)
        }
        family(udp, "berth_udp_backend_errors_total", .counter, "Errors the backend side reported (ICMP unreachable).")
        {
            Double($0.backendErrors)
        }

        if !kernel.isEmpty {
            out.header(
                "berth_kernel_dnat_packets_total",
                .counter,
                "Connections or flows DNATed by the kernel path (their first packets)."
            )
            for k in kernel { out.sample("berth_kernel_dnat_packets_total", k.labels, Double(k.packets)) }
            out.header(
                "berth_kernel_dnat_bytes_total",
                .counter,
                "Bytes of the first packets DNATed by the kernel path."
            )
            for k in kernel { out.sample("berth_kernel_dnat_bytes_total", k.labels, Double(k.bytes)) }
        }
        return out.text
    }
}

typealias Labels = [(String, String)]

extension PublisherMetrics.Mapping {
    var labels: Labels {
        var labels: Labels = [
            ("proto", proto.rawValue), ("host_address", host.ipText), ("host_port", "\(host.port)"),
            ("target", target.description),
        ]
        if let owner { labels.append(("owner", owner)) }
        return labels
    }
}

extension PublisherMetrics.KernelRule {
    var labels: Labels {
        let host = rule.hostIP?.description ?? (rule.family == .v6 ? "::" : "0.0.0.0")
        var labels: Labels = [
            ("proto", rule.proto.rawValue), ("host_address", host), ("host_port", "\(rule.hostPort)"),
            ("target", "\(rule.containerIP.bracketed):\(rule.containerPort)"),
        ]
        if let owner { labels.append(("owner", owner)) }
        return labels
    }
}

/// Builds the text. Values are integers here; a Double prints them exactly up to 2^53.
struct Exposition {
    enum Kind: String {
        case counter, gauge
    }

    private(set) var text = ""

    mutating func header(_ name: String, _ kind: Kind, _ help: String) {
        text += "# HELP \(name) \(Self.escapeHelp(help))\n# TYPE \(name) \(kind.rawValue)\n"
    }

    mutating func gauge(_ name: String, _ help: String, _ value: Double) { single(name, .gauge, help, value) }

    mutating func counter(_ name: String, _ help: String, _ value: Double) { single(name, .counter, help, value) }

    /// A metric with one unlabelled sample.
    private mutating func single(_ name: String, _ kind: Kind, _ help: String, _ value: Double) {
        header(name, kind, help)
        sample(name, [], value)
    }

    mutating func sample(_ name: String, _ labels: Labels, _ value: Double) {
        text += name
        if !labels.isEmpty {
            text += "{"
            for (i, (key, value)) in labels.enumerated() {
                if i > 0 { text += "," }
                text += key
                text += "=\""
                text += Self.escapeLabel(value)
                text += "\""
            }
            text += "}"
        }
        text += " "
        text += Self.format(value)
        text += "\n"
    }

    /// Integers without a fraction (what every berth value is), anything else as Swift prints it.
    static func format(_ value: Double) -> String {
        if value.isNaN { return "NaN" }
        if value.isInfinite { return value > 0 ? "+Inf" : "-Inf" }
        if value == value.rounded(), abs(value) < 9.007_199_254_740_992e15 { return "\(Int64(value))" }
        return "\(value)"
    }

    /// Label values: backslash, double quote and line feed escaped.
    static func escapeLabel(_ value: String) -> String { escaped(value, quotes: true) }

    /// HELP text: backslash and line feed escaped.
    static func escapeHelp(_ value: String) -> String { escaped(value, quotes: false) }

    /// The exposition format's escapes: backslash and line feed, and double quotes in label values.
    private static func escaped(_ value: String, quotes: Bool) -> String {
        guard
            value.utf8.contains(where: {
                $0 == UInt8(ascii: "\\") || $0 == UInt8(ascii: "\n") || (quotes && $0 == UInt8(ascii: "\""))
            })
        else { return value }
        var out = ""
        for c in value.unicodeScalars {
            switch c {
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\"" where quotes: out += "\\\""
            default: out.unicodeScalars.append(c)
            }
        }
        return out
    }
}
