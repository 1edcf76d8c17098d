import Mappings

/// The address family of a rule: which wildcard map a rule without a host address lives in.
package enum IPFamily: Sendable, Hashable, CustomStringConvertible {
    case v4, v6

    package var description: String { self == .v4 ? "ipv4" : "ipv6" }
}

extension IPAddress {
    /// The family of this address (IPv4-mapped IPv6 counts as IPv6 here: call `unmapped` first).
    package var family: IPFamily { isV6 ? .v6 : .v4 }
}

/// One published port served by the kernel: packets to `hostIP:hostPort` (or to any local address
/// of `family` when `hostIP` is nil) are DNATed to `containerIP:containerPort`.
package struct DNATRule: Sendable, Hashable, CustomStringConvertible {
    /// `.tcp` or `.udp`.
    package var proto: Proto
    /// nil: any local, non-loopback address of `family` (a wildcard binding).
    package var hostIP: IPAddress?
    /// Which wildcard map a nil `hostIP` goes to; always the family of `containerIP`.
    package var family: IPFamily
    package var hostPort: UInt16
    package var containerIP: IPAddress
    package var containerPort: UInt16

    package init(
        proto: Proto,
        hostIP: IPAddress?,
        family: IPFamily,
        hostPort: UInt16,
        containerIP: IPAddress,
        containerPort: UInt16
    ) {
        self.proto = proto
        self.hostIP = hostIP
        self.family = family
        self.hostPort = hostPort
        self.containerIP = containerIP
        self.containerPort = containerPort
    }

    /// A rule whose family follows `containerIP`. IPv4-mapped addresses become IPv4, and an
    /// unspecified host address (`0.0.0.0`, `::`) becomes the wildcard (nil).
    package init(proto: Proto, hostIP: IPAddress?, hostPort: UInt16, containerIP: IPAddress, containerPort: UInt16) {
        let container = containerIP.unmapped
        let host = hostIP.map { $0.unmapped }
        self.init(
            proto: proto,
            hostIP: host?.isUnspecified == true ? nil : host,
            family: container.family,
            hostPort: hostPort,
            containerIP: container,
            containerPort: containerPort
        )
    }

    /// `198.18.0.1:8080/tcp -> 198.18.0.2:80`, `*4:8080/tcp -> ...` for a wildcard.
    package var description: String {
        let host = hostIP?.bracketed ?? (family == .v4 ? "*4" : "*6")
        return "\(host):\(hostPort)/\(proto) -> \(containerIP.bracketed):\(containerPort)"
    }

    /// Why the kernel path cannot serve this rule, or nil when it can.
    var unsupportedReason: String? {
        if proto != .tcp && proto != .udp { return "only tcp and udp are published by nftables" }
        if containerIP.family != family { return "container address \(containerIP) is not \(family)" }
        if let hostIP {
            if hostIP.family != family { return "host address \(hostIP) is not \(family)" }
            if hostIP.isLoopback { return "loopback host addresses stay with the userspace relay" }
            if hostIP.isUnspecified { return "use a nil hostIP for all addresses" }
        }
        if hostPort == 0 || containerPort == 0 { return "port 0 cannot be published" }
        return nil
    }
}
