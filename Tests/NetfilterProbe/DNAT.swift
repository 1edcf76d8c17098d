// The DNAT scenario: real packets through the table.
//
//   client ns "x"                    this ns: "host", owns the table          container ns "c"
//   x-h 198.18.1.2/24  ──veth──  h-x 198.18.1.1/24   h-c 198.18.0.1/24  ──veth──  c-h 198.18.0.2/24
//                                                     fd00:b::1/64                   fd00:b::2/64
//
// The other namespaces are held by `unshare -n sleep` processes and entered with nsenter.
import Glibc
import Mappings
import Netfilter
import TestSupport

/// Starts `unshare -n sleep 60` and waits until it runs in its own network namespace.
func holdNamespace() -> Subprocess {
    let holder = start(["unshare", "-n", "sleep", "60"])
    let ours = readLink("/proc/self/ns/net")
    let unshared = eventually(seconds: 1) {
        readLink("/proc/\(holder.pid)/ns/net").map { $0 != ours } ?? false
    }
    check(unshared, "namespace holder \(holder.pid) did not start")
    return holder
}

func inNamespace(_ pid: pid_t, _ command: [String]) -> [String] {
    ["nsenter", "-t", "\(pid)", "-n"] + command
}

/// Starts a server in a namespace and waits for its `listening`.
func startServer(_ pid: pid_t, _ proto: String, _ address: String, _ port: UInt16) -> Subprocess {
    let server = start(inNamespace(pid, [selfPath, "serve", proto, address, "\(port)"]))
    let line = server.waitForLines(1, seconds: 5).first
    check(line == "listening", "server \(proto) \(address):\(port) said \(line ?? "nothing")")
    return server
}

func connect(from pid: pid_t?, _ proto: String, _ address: String, _ port: UInt16, _ number: Int) -> String {
    let command = [selfPath, "client", proto, address, "\(port)", "\(number)"]
    return run(pid.map { inNamespace($0, command) } ?? command).output.trimmingSuffix { $0 == "\n" }
}

func dnatScenario() {
    let containerHolder = holdNamespace()
    let outsideHolder = holdNamespace()
    let container = containerHolder.pid
    let outside = outsideHolder.pid
    var children = [containerHolder, outsideHolder]
    defer {
        for child in children { child.signal(SIGKILL) }
    }
    atexit_children = children.map(\.pid)

    let host: [[String]] = [
        ["ip", "link", "set", "lo", "up"],
        ["ip", "link", "add", "h-c", "type", "veth", "peer", "name", "c-h"],
        ["ip", "link", "add", "h-x", "type", "veth", "peer", "name", "x-h"],
        ["ip", "link", "set", "c-h", "netns", "\(container)"],
        ["ip", "link", "set", "x-h", "netns", "\(outside)"],
        ["ip", "addr", "add", "198.18.0.1/24", "dev", "h-c"],
        ["ip", "-6", "addr", "add", "fd00:b::1/64", "dev", "h-c", "nodad"],
        ["ip", "addr", "add", "198.18.1.1/24", "dev", "h-x"],
        ["ip", "link", "set", "h-c", "up"],
        ["ip", "link", "set", "h-x", "up"],
        ["sysctl", "-qw", "net.ipv4.ip_forward=1"],
        ["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"],
    ]
    for command in host { must(command) }
    for command in [
        ["ip", "link", "set", "lo", "up"],
        ["ip", "addr", "add", "198.18.0.2/24", "dev", "c-h"],
        ["ip", "-6", "addr", "add", "fd00:b::2/64", "dev", "c-h", "nodad"],
        ["ip", "link", "set", "c-h", "up"],
        ["ip", "route", "add", "default", "via", "198.18.0.1"],
        ["ip", "-6", "route", "add", "default", "via", "fd00:b::1"],
    ] { must(inNamespace(container, command)) }
    for command in [
        ["ip", "link", "set", "lo", "up"],
        ["ip", "addr", "add", "198.18.1.2/24", "dev", "x-h"],
        ["ip", "link", "set", "x-h", "up"],
        ["ip", "route", "add", "default", "via", "198.18.1.1"],
    ] { must(inNamespace(outside, command)) }

    children.append(startServer(container, "tcp", "198.18.0.2", 80))
    children.append(startServer(container, "tcp", "fd00:b::2", 80))
    children.append(startServer(container, "udp", "198.18.0.2", 53))
    atexit_children = children.map(\.pid)

    let table = tryOrFail("create table") { () throws(NetfilterError) in try NatTable(name: NatTable.defaultName()) }
    let specific = rule(.tcp, "198.18.0.1", 8080, "198.18.0.2", 80)
    let wildcard = rule(.tcp, nil, 8081, "198.18.0.2", 80)
    let specific6 = rule(.tcp, "fd00:b::1", 8080, "fd00:b::2", 80)
    let wildcard6 = rule(.tcp, nil, 8081, "fd00:b::2", 80)
    let udp = rule(.udp, "198.18.0.1", 5353, "198.18.0.2", 53)
    tryOrFail("add") { () throws(NetfilterError) in try table.add([specific, wildcard, specific6, wildcard6, udp]) }

    // Before the first connection: direct reachability, so a DNAT failure is not a topology one.
    print("direct: \(connect(from: outside, "tcp", "198.18.0.2", 80, 10))")
    print("outside-specific: \(connect(from: outside, "tcp", "198.18.0.1", 8080, 1000))")
    print("outside-wildcard: \(connect(from: outside, "tcp", "198.18.1.1", 8081, 2000))")
    print("host-specific: \(connect(from: nil, "tcp", "198.18.0.1", 8080, 3000))")
    print("host-wildcard: \(connect(from: nil, "tcp", "198.18.1.1", 8081, 4000))")
    print("host-loopback: \(connect(from: nil, "tcp", "127.0.0.1", 8081, 10))")
    print("hairpin: \(connect(from: container, "tcp", "198.18.0.1", 8080, 5000))")
    print("host-specific6: \(connect(from: nil, "tcp", "fd00:b::1", 8080, 6000))")
    print("host-wildcard6: \(connect(from: nil, "tcp", "fd00:b::1", 8081, 7000))")

    let counters = tryOrFail("counters") { () throws(NetfilterError) in try table.counters() }
    for (name, r) in [
        ("specific", specific), ("wildcard", wildcard), ("specific6", specific6), ("wildcard6", wildcard6),
    ] {
        let c = counters[r]
        print("counter-\(name): packets=\(c?.packets ?? 0) bytes=\(c?.bytes ?? 0)")
    }

    // UDP: a flow keeps going to its target after the rule is gone, until conntrack forgets it.
    print("udp-first: \(connect(from: outside, "udp", "198.18.0.1", 5353, 40000))")
    tryOrFail("remove udp") { () throws(NetfilterError) in try table.remove([udp]) }
    print("udp-after-remove: \(connect(from: outside, "udp", "198.18.0.1", 5353, 40000))")
    let deleted = tryOrFail("delete flows") { () throws(NetfilterError) in
        try Conntrack.deleteUDPFlows(to: ip("198.18.0.2"), port: 53)
    }
    print("conntrack-deleted: \(deleted)")
    print("udp-after-conntrack: \(connect(from: outside, "udp", "198.18.0.1", 5353, 40000))")
    let again = tryOrFail("delete flows again") { () throws(NetfilterError) in
        try Conntrack.deleteUDPFlows(to: ip("198.18.0.2"), port: 53)
    }
    print("conntrack-deleted-again: \(again)")

    // Removing the TCP rules stops new connections.
    tryOrFail("remove tcp") { () throws(NetfilterError) in try table.remove([specific, wildcard]) }
    print("outside-after-remove: \(connect(from: outside, "tcp", "198.18.0.1", 8080, 10))")
}

/// Children to kill if the probe exits through `fail` (defer does not run on exit()).
nonisolated(unsafe) var atexit_children: [pid_t] = [] {
    didSet {
        if !registered {
            registered = true
            atexit { for child in atexit_children { kill(child, SIGKILL) } }
        }
    }
}
nonisolated(unsafe) private var registered = false
