#if canImport(Glibc)
import Glibc
#endif

/// An IPv4 or IPv6 address, stored in network byte order.
package enum IPAddress: Sendable, Hashable, CustomStringConvertible {
    case v4(UInt8, UInt8, UInt8, UInt8)
    case v6(Bytes16)

    package struct Bytes16: Sendable, Hashable {
        package var bytes: (UInt64, UInt64)  // raw memory of in6_addr, network order
        package init(_ bytes: (UInt64, UInt64)) { self.bytes = bytes }
        package static func == (a: Bytes16, b: Bytes16) -> Bool { a.bytes == b.bytes }
        package func hash(into hasher: inout Hasher) {
            hasher.combine(bytes.0)
            hasher.combine(bytes.1)
        }
    }

    package static let anyV4 = IPAddress.v4(0, 0, 0, 0)
    package static let anyV6 = IPAddress.v6(Bytes16((0, 0)))
    package static let loopbackV4 = IPAddress.v4(127, 0, 0, 1)
    package static var loopbackV6: IPAddress { IPAddress("::1")! }

    /// Parses dotted IPv4 or any textual IPv6 (no brackets, no zone). nil if it does not parse.
    package init?(_ text: String) {
        // inet_pton reads a C string: a NUL would end the address early.
        guard !text.utf8.contains(0) else { return nil }
        if text.contains(":") {
            var a = in6_addr()
            guard inet_pton(AF_INET6, text, &a) == 1 else { return nil }
            self = withUnsafeBytes(of: &a) { raw in
                .v6(
                    Bytes16(
                        (raw.load(fromByteOffset: 0, as: UInt64.self), raw.load(fromByteOffset: 8, as: UInt64.self))
                    )
                )
            }
        } else {
            var a = in_addr()
            guard inet_pton(AF_INET, text, &a) == 1 else { return nil }
            self = withUnsafeBytes(of: &a) { raw in .v4(raw[0], raw[1], raw[2], raw[3]) }
        }
    }

    package var isV6: Bool { if case .v6 = self { return true } else { return false } }

    package var isUnspecified: Bool { self == .anyV4 || self == .anyV6 }

    package var isLoopback: Bool {
        switch self {
        case .v4(let a, _, _, _): return a == 127
        case .v6: return self == .loopbackV6
        }
    }

    /// An IPv4-mapped IPv6 address (`::ffff:1.2.3.4`) as its IPv4 form; otherwise self.
    package var unmapped: IPAddress {
        guard case .v6 = self else { return self }
        let b = bytes
        if b[0..<10].allSatisfy({ $0 == 0 }) && b[10] == 0xff && b[11] == 0xff {
            return .v4(b[12], b[13], b[14], b[15])
        }
        return self
    }

    /// The address's bytes in network order (4 or 16).
    package var bytes: [UInt8] {
        switch self {
        case .v4(let a, let b, let c, let d): return [a, b, c, d]
        case .v6(let raw): return withUnsafeBytes(of: raw.bytes) { Array($0) }
        }
    }

    package init?(bytes: [UInt8]) {
        switch bytes.count {
        case 4: self = .v4(bytes[0], bytes[1], bytes[2], bytes[3])
        case 16:
            var raw: (UInt64, UInt64) = (0, 0)
            withUnsafeMutableBytes(of: &raw) { $0.copyBytes(from: bytes) }
            self = .v6(Bytes16(raw))
        default: return nil
        }
    }

    package var description: String {
        switch self {
        case .v4(let a, let b, let c, let d): return "\(a).\(b).\(c).\(d)"
        case .v6(let raw):
            var copy = raw.bytes
            var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
            _ = inet_ntop(AF_INET6, &copy, &buffer, socklen_t(buffer.count))
            return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        }
    }

    /// IPv6 in brackets, for `address:port` text.
    package var bracketed: String { isV6 ? "[\(description)]" : description }
}
