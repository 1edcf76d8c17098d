// Network namespaces a test creates for itself and always deletes: an outside "client",
// a "host" where berth runs, and a "container" behind a bridge and a veth pair.
//
//   client (198.18.1.2, fd00:b:1::2) ── veth ── host (198.18.1.1 | bridge br0 198.18.0.1) ── veth ── container eth0 (198.18.0.2, fd00:b::2)
//
// Nothing touches the root namespace: every link lives inside these namespaces.

import CTestSupport
import Glibc
import LinuxIO
import Synchronization

package final class Topology: @unchecked Sendable {
    package let host: String
    package let container: String
    package let client: String
    package static let containerIP = "198.18.0.2"
    package static let bridgeIP = "198.18.0.1"
    package static let hostOutsideIP = "198.18.1.1"
    package static let clientIP = "198.18.1.2"
    package static let containerIPv6 = "fd00:b::2"
    package static let bridgeIPv6 = "fd00:b::1"
    package static let hostOutsideIPv6 = "fd00:b:1::1"
    package static let clientIPv6 = "fd00:b:1::2"

    /// Why namespaces cannot be made here, or nil when they can.
    package static var unavailableReason: String? {
        if geteuid() != 0 { return "network namespace tests need root (CI runs them as root)" }
        if access("/usr/sbin/ip", X_OK) != 0 && access("/sbin/ip", X_OK) != 0 && access("/usr/bin/ip", X_OK) != 0 {
            return "iproute2's ip is not installed (make test installs it)"
        }
        return nil
    }

    package init() throws {
        let tag = "\(getpid())-\(UInt32.random(in: 0..<1_000_000))"
        host = "berth-h-\(tag)"
        container = "berth-c-\(tag)"
        client = "berth-o-\(tag)"
        do {
            try Topology.ip("netns add \(host)")
            try Topology.ip("netns add \(container)")
            try Topology.ip("netns add \(client)")
            for ns in [host, container, client] { try Topology.ip("-n \(ns) link set lo up") }
            // host ── container, through a bridge as Docker does
            try Topology.ip("-n \(host) link add br0 type bridge")
            try Topology.ip("-n \(host) addr add \(Topology.bridgeIP)/24 dev br0")
            try Topology.ip("-n \(host) addr add \(Topology.bridgeIPv6)/64 dev br0 nodad")
            try Topology.ip("-n \(host) link set br0 up")
            try Topology.ip("-n \(host) link add veth-c type veth peer name eth0 netns \(container)")
            try Topology.ip("-n \(host) link set veth-c master br0 up")
            // As Docker does for its bridge ports: a container may reach itself through a host
            // address (DNAT back out of the port the packet came in by).
            try Topology.ip("-n \(host) link set veth-c type bridge_slave hairpin on")
            try Topology.ip("-n \(container) addr add \(Topology.containerIP)/24 dev eth0")
            try Topology.ip("-n \(container) addr add \(Topology.containerIPv6)/64 dev eth0 nodad")
            try Topology.ip("-n \(container) link set eth0 up")
            try Topology.ip("-n \(container) route add default via \(Topology.bridgeIP)")
            try Topology.ip("-n \(container) -6 route add default via \(Topology.bridgeIPv6)")
            // client ── host, the outside network
            try Topology.ip("-n \(host) link add veth-o type veth peer name eth0 netns \(client)")
            try Topology.ip("-n \(host) addr add \(Topology.hostOutsideIP)/24 dev veth-o")
            try Topology.ip("-n \(host) addr add \(Topology.hostOutsideIPv6)/64 dev veth-o nodad")
            try Topology.ip("-n \(host) link set veth-o up")
            try Topology.ip("-n \(client) addr add \(Topology.clientIP)/24 dev eth0")
            try Topology.ip("-n \(client) addr add \(Topology.clientIPv6)/64 dev eth0 nodad")
            try Topology.ip("-n \(client) link set eth0 up")
            try Topology.ip("-n \(client) route add default via \(Topology.hostOutsideIP)")
            try Topology.ip("-n \(client) -6 route add default via \(Topology.hostOutsideIPv6)")
            try Topology.ip("netns exec \(host) sysctl -q -w net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1")
        } catch {
            destroy()
            throw error
        }
    }

    deinit { destroy() }

    /// Deletes the namespaces and every link in them.
    package func destroy() {
        for ns in [host, container, client] { _ = try? Topology.ip("netns del \(ns)", quiet: true) }
    }

    package static func ip(_ arguments: String, quiet: Bool = false) throws {
        let path =
            access("/usr/sbin/ip", X_OK) == 0
            ? "/usr/sbin/ip" : (access("/sbin/ip", X_OK) == 0 ? "/sbin/ip" : "/usr/bin/ip")
        let result = try Subprocess.run(path, arguments.split(separator: " ").map(String.init))
        if result.code != 0 && !quiet { throw TestFailure("ip \(arguments): \(result.stderr)") }
    }

    /// Runs `body` on a thread inside namespace `name`: sockets made there belong to it for life.
    package static func inside<T: Sendable>(_ name: String, _ body: @escaping @Sendable () throws -> T) throws -> T {
        let fd = open("/run/netns/\(name)", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw TestFailure("open netns \(name): \(errnoText())") }
        defer { close(fd) }
        let result = Mutex<Result<T, any Error>?>(nil)
        let box = Handover(body)
        let thread = try LoopThread(name: "in-netns") {
            guard CTestSupport_setns(fd, CTestSupport_CLONE_NEWNET) == 0 else {
                let e = TestFailure("setns \(name): \(errnoText())")
                result.withLock { $0 = .failure(e) }
                return
            }
            let r = Result { try box.value() }
            result.withLock { $0 = .some(r) }
        }
        thread.join()
        return try result.withLock { $0 }!.get()
    }

    /// argv that runs a program inside namespace `name`.
    package static func exec(in name: String, _ program: String, _ arguments: [String]) -> (String, [String]) {
        let path = access("/usr/sbin/ip", X_OK) == 0 ? "/usr/sbin/ip" : "/sbin/ip"
        return (path, ["netns", "exec", name, program] + arguments)
    }
}
