// Where the client, the forwarder and the backend sit.
//
// loopback: all three in the runner's namespace, on 127.0.0.1.
// netns:    three namespaces the runner makes and always deletes (also on failure,
//           SIGINT and SIGTERM); nothing is added to the runner's own namespace.
//
//   client ns (198.18.11.2) ── veth ── host ns (198.18.11.1 | bridge 198.18.10.1) ── veth ── container ns (198.18.10.2)
//
// The forwarder runs in the host namespace and listens on 198.18.11.1; `direct` sends
// from the client straight to 198.18.10.2, routed by the host namespace.

import Glibc
import Synchronization

enum ScenarioKind: String, CaseIterable, Sendable {
    case loopback, netns
}

final class Scenario {
    let kind: ScenarioKind
    /// Namespace of the client, the forwarder, the backend (nil: the runner's own).
    let clientNS: String?
    let hostNS: String?
    let containerNS: String?
    let listenIP: String
    let backendIP: String

    private init(
        kind: ScenarioKind,
        clientNS: String?,
        hostNS: String?,
        containerNS: String?,
        listenIP: String,
        backendIP: String
    ) {
        self.kind = kind
        self.clientNS = clientNS
        self.hostNS = hostNS
        self.containerNS = containerNS
        self.listenIP = listenIP
        self.backendIP = backendIP
    }

    static func loopback() -> Scenario {
        Scenario(
            kind: .loopback,
            clientNS: nil,
            hostNS: nil,
            containerNS: nil,
            listenIP: "127.0.0.1",
            backendIP: "127.0.0.1"
        )
    }

    /// Why the netns scenario cannot run here, or nil.
    static var netnsUnavailable: String? {
        if geteuid() != 0 { return "the netns scenario needs root" }
        if Discovery.which("ip") == nil { return "iproute2's ip is not installed" }
        return nil
    }

    static func netns() throws -> Scenario {
        let tag = "\(getpid())"
        let client = "bbench-c-\(tag)"
        let host = "bbench-h-\(tag)"
        let container = "bbench-k-\(tag)"
        Cleanup.shared.addNamespaces([client, host, container])
        do {
            for ns in [client, host, container] {
                try ip("netns add \(ns)")
                try ip("-n \(ns) link set lo up")
            }
            try ip("-n \(host) link add br0 type bridge")
            try ip("-n \(host) addr add 198.18.10.1/24 dev br0")
            try ip("-n \(host) link set br0 up")
            try ip("-n \(host) link add veth-c type veth peer name eth0 netns \(container)")
            try ip("-n \(host) link set veth-c master br0 up")
            try ip("-n \(container) addr add 198.18.10.2/24 dev eth0")
            try ip("-n \(container) link set eth0 up")
            try ip("-n \(container) route add default via 198.18.10.1")
            try ip("-n \(host) link add veth-o type veth peer name eth0 netns \(client)")
            try ip("-n \(host) addr add 198.18.11.1/24 dev veth-o")
            try ip("-n \(host) link set veth-o up")
            try ip("-n \(client) addr add 198.18.11.2/24 dev eth0")
            try ip("-n \(client) link set eth0 up")
            try ip("-n \(client) route add default via 198.18.11.1")
            // Forwarding for `direct`; TIME_WAIT reuse as loopback has it by default, so that
            // thousands of short connections a second do not run out of source ports.
            try ip("netns exec \(host) sysctl -q -w net.ipv4.ip_forward=1 net.ipv4.tcp_tw_reuse=1")
            try ip("netns exec \(client) sysctl -q -w net.ipv4.tcp_tw_reuse=1")
            try ip("netns exec \(container) sysctl -q -w net.ipv4.tcp_tw_reuse=1")
        } catch {
            Cleanup.shared.deleteNamespaces()
            throw error
        }
        return Scenario(
            kind: .netns,
            clientNS: client,
            hostNS: host,
            containerNS: container,
            listenIP: "198.18.11.1",
            backendIP: "198.18.10.2"
        )
    }

    func destroy() {
        if kind == .netns { Cleanup.shared.deleteNamespaces() }
    }

    static func ip(_ arguments: String) throws {
        let argv = ["ip"] + arguments.split(separator: " ").map(String.init)
        let child = try Child.spawn(argv, name: "ip", workDirectory: Cleanup.shared.workDirectory)
        var status: Int32 = 0
        waitpid(child.pid, &status, 0)
        let text = child.stderrTail()
        unlink(child.stderrPath)
        if status != 0 { throw BenchError("ip \(arguments): \(text)") }
    }
}

/// What must go away however the runner ends: namespaces, forwarder process groups, the
/// work directory. SIGINT and SIGTERM run it too.
final class Cleanup: @unchecked Sendable {
    static let shared = Cleanup()
    private let state = Mutex<(namespaces: [String], groups: Set<pid_t>)>(([], []))
    private(set) var workDirectory = "/tmp"

    func setWorkDirectory(_ path: String) { workDirectory = path }

    func addNamespaces(_ names: [String]) { state.withLock { $0.namespaces += names } }

    func track(_ pid: pid_t) { _ = state.withLock { $0.groups.insert(pid) } }
    func untrack(_ pid: pid_t) { _ = state.withLock { $0.groups.remove(pid) } }

    func deleteNamespaces() {
        let names = state.withLock { s in
            let n = s.namespaces
            s.namespaces = []
            return n
        }
        for ns in names {
            var pid: pid_t = 0
            let words: [String] = ["ip", "netns", "del", ns]
            let argv: [UnsafeMutablePointer<CChar>?] = words.map { strdup($0) } + [nil]
            defer { for p in argv { free(p) } }
            if posix_spawnp(&pid, "ip", nil, nil, argv, environ) == 0 {
                var status: Int32 = 0
                waitpid(pid, &status, 0)
            }
        }
    }

    /// Everything, at once: for the end of the run and for signals.
    func all() {
        let groups = state.withLock { $0.groups }
        for g in groups { kill(-g, SIGKILL) }
        deleteNamespaces()
        if workDirectory.hasPrefix("/tmp/berth-bench.") {
            _ = Discovery.output("rm -rf '\(workDirectory)'")
        }
    }

    /// SIGTERM and SIGHUP clean up and exit at once; the first SIGINT (Ctrl-C) asks the runner
    /// to stop after the measurement under way and write what it has, a second one exits too.
    func installSignalHandlers() {
        for s in [SIGTERM, SIGHUP] {
            signal(s) { number in
                Cleanup.shared.all()
                _exit(128 + number)
            }
        }
        signal(SIGINT) { number in
            if interruptRequested.exchange(true, ordering: .relaxed) {
                Cleanup.shared.all()
                _exit(128 + number)
            }
            let note: StaticString =
                "\nberth-bench: interrupted: stopping after this measurement to write the partial report (Ctrl-C again to quit now)\n"
            _ = write(2, note.utf8Start, note.utf8CodeUnitCount)
        }
    }
}

/// Set by the first Ctrl-C: the runner measures nothing more.
let interruptRequested = Atomic<Bool>(false)
