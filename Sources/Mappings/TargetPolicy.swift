// Which container addresses the daemon's API may publish towards. Access to the control socket
// is access to what the daemon can reach: a port towards 127.0.0.1 would expose the host's own
// loopback-only services (the daemon's metrics port among them) to whoever reaches the host
// port. So loopback, unspecified, multicast and broadcast targets are refused unless the
// operator allowed them (`berth daemon --allow-target CIDR`). `berth run`'s user chose its
// target on the command line: this policy is the API's only.

/// `10.0.0.0/8`, `fd00::/64`, or one address (a /32 or /128).
package struct AddressRange: Sendable, Equatable, CustomStringConvertible {
    package let network: IPAddress
    package let prefix: Int

    package init?(_ text: String) {
        let parts = text.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        guard let first = parts.first, let ip = IPAddress(String(first)) else { return nil }
        let width = ip.isV6 ? 128 : 32
        var prefix = width
        if parts.count == 2 {
            guard let p = Int(parts[1]), p >= 0, p <= width, parts[1].allSatisfy(\.isASCII) else { return nil }
            prefix = p
        }
        network = ip
        self.prefix = prefix
    }

    /// An IPv4-mapped IPv6 address is compared as its IPv4 form.
    package func contains(_ address: IPAddress) -> Bool {
        let a = address.unmapped
        let n = network.unmapped
        guard a.isV6 == n.isV6 else { return false }
        let bits = n.isV6 ? prefix : min(prefix, 32)
        let x = a.bytes
        let y = n.bytes
        var left = bits
        for i in 0..<x.count where left > 0 {
            let take = min(8, left)
            let mask = UInt8(truncatingIfNeeded: 0xFF << (8 - take))
            if x[i] & mask != y[i] & mask { return false }
            left -= take
        }
        return true
    }

    package var description: String { "\(network)/\(prefix)" }
}

package struct TargetPolicy: Sendable, Equatable {
    /// Ranges the operator allowed besides what is allowed anyway.
    package var allowed: [AddressRange]

    package init(allowed: [AddressRange] = []) { self.allowed = allowed }

    /// Why `target` is refused, or nil when it may be published towards.
    package func refusal(_ target: IPAddress) -> String? {
        let address = target.unmapped
        let kind: String
        if address.isUnspecified {
            kind = "unspecified"
        } else if address.isLoopback {
            kind = "a loopback address"
        } else if address.isMulticast {
            kind = "a multicast address"
        } else if address == .v4(255, 255, 255, 255) {
            kind = "the broadcast address"
        } else {
            return nil
        }
        if allowed.contains(where: { $0.contains(target) }) { return nil }
        return "target \(target) is \(kind): the daemon publishes only towards containers unless it runs "
            + "with --allow-target \(Self.suggestion(address))"
    }

    private static func suggestion(_ address: IPAddress) -> String {
        address.isV6 ? "\(address)/128" : "\(address)/32"
    }
}

extension IPAddress {
    /// 224.0.0.0/4 or ff00::/8.
    package var isMulticast: Bool {
        switch unmapped {
        case .v4(let a, _, _, _): return a >= 224 && a <= 239
        case .v6: return bytes[0] == 0xFF
        }
    }
}
