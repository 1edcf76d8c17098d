// The kernel fast path as Publishing uses it: which bound ports nftables DNAT can serve,
// and the table's life (created before any port is reported, deleted on the way out).

import Glibc
import Mappings
import Netfilter

extension Mode {
    /// The mode berth picks when none is asked for, and the notice to print when it cannot
    /// have the fast path.
    package static func automatic() -> (Mode, notice: String?) {
        if Capability.hasNetAdmin() { return (.hybrid, nil) }
        return (
            .userspace,
            "no CAP_NET_ADMIN, so no kernel fast path: forwarding in userspace only (--mode userspace hides this notice)"
        )
    }
}

enum KernelPath {
    /// The host address a port is bound to, IPv4-mapped addresses as IPv4.
    private static func hostIP(_ port: BoundPort) -> IPAddress { IPAddress(port.address).unmapped }

    /// Whether DNAT can serve traffic arriving at `port`: not loopback (route_localnet stays off,
    /// CVE-2020-8558) and the same family on both sides (no NAT64).
    static func canServe(_ port: BoundPort) -> Bool {
        guard port.mapping.proto == .tcp || port.mapping.proto == .udp else { return false }
        let host = hostIP(port)
        if host.isLoopback { return false }
        return host.isV6 == port.mapping.containerIP.unmapped.isV6
    }

    static func rule(for port: BoundPort) -> DNATRule {
        DNATRule(
            proto: port.mapping.proto,
            hostIP: hostIP(port),
            hostPort: port.address.port,
            containerIP: port.mapping.containerIP,
            containerPort: port.mapping.containerPort
        )
    }

    /// Why the kernel path cannot serve a mapping, for `--mode kernel`.
    static func refusal(_ port: BoundPort) -> String {
        let host = hostIP(port)
        if host.isLoopback {
            return
                "\(port.mapping.containerSide): \(port.address): the kernel path does not serve loopback addresses (use --mode hybrid)"
        }
        if port.mapping.proto != .tcp && port.mapping.proto != .udp {
            return "\(port.mapping.containerSide): the kernel path serves tcp and udp only"
        }
        return
            "\(port.mapping.containerSide): \(port.address) -> \(port.mapping.containerIP): DNAT cannot change the address family (use --mode hybrid)"
    }
}
