// What to publish. These types are the contract between the `-p` grammar
// (PortSpec.swift), the relay and the netfilter layer.

/// A transport protocol as written after the slash in `-p 80/udp`.
package enum Proto: String, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    case tcp, udp, sctp
    package var description: String { rawValue }
}

/// An inclusive range of ports, `first <= last`.
package struct PortRange: Sendable, Hashable, CustomStringConvertible {
    package let first: UInt16
    package let last: UInt16

    package init(_ first: UInt16, _ last: UInt16) {
        precondition(first <= last, "PortRange \(first)-\(last) is reversed")
        self.first = first
        self.last = last
    }

    package init(single port: UInt16) { self.init(port, port) }

    package var count: Int { Int(last) - Int(first) + 1 }
    package var isSingle: Bool { first == last }
    package var description: String { isSingle ? "\(first)" : "\(first)-\(last)" }
}

/// How the host port of one mapping is chosen.
package enum HostPort: Sendable, Hashable, CustomStringConvertible {
    /// The kernel picks a free port (`-p 80`, `-p 127.0.0.1::80`).
    case ephemeral
    /// Exactly this port (`-p 8080:80`).
    case fixed(UInt16)
    /// The first port of the range that binds (`-p 8000-8010:80`, as Docker does).
    case anyOf(PortRange)

    package var description: String {
        switch self {
        case .ephemeral: return ""
        case .fixed(let port): return "\(port)"
        case .anyOf(let range): return range.description
        }
    }
}

/// One published port: a host side to bind and a container side to forward to.
package struct PortMapping: Sendable, Hashable, CustomStringConvertible {
    package var proto: Proto
    /// nil means all addresses: both `0.0.0.0` and `::`, each its own socket, as Docker does.
    package var hostIP: IPAddress?
    package var hostPort: HostPort
    package var containerIP: IPAddress
    package var containerPort: UInt16

    package init(
        proto: Proto,
        hostIP: IPAddress?,
        hostPort: HostPort,
        containerIP: IPAddress,
        containerPort: UInt16
    ) {
        self.proto = proto
        self.hostIP = hostIP
        self.hostPort = hostPort
        self.containerIP = containerIP
        self.containerPort = containerPort
    }

    /// `docker port` style name of the container side: `80/tcp`.
    package var containerSide: String { "\(containerPort)/\(proto)" }

    package var description: String {
        let host = hostIP.map { $0.bracketed + ":" } ?? ""
        return "\(host)\(hostPort):\(containerIP.bracketed):\(containerPort)/\(proto)"
    }
}

/// How bytes move.
package enum Mode: String, Sendable, CaseIterable {
    /// berth's own relay only.
    case userspace
    /// nftables DNAT only: no userspace copy; ports are reserved but not served on loopback.
    case kernel
    /// DNAT for everything it can serve, the relay for loopback and IPv6→IPv4 (what Docker does).
    case hybrid
}
