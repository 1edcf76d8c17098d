import Glibc

/// An IPv4 or IPv6 socket address, stored as the kernel wants it (no allocation to pass it on).
/// Held in a `sockaddr_in6`, which a `sockaddr_in` fits in: 32 bytes in all, where
/// `sockaddr_storage` would take 136 in every listener, mapping and UDP flow key, and in every copy.
public struct SocketAddress: Sendable, Hashable, CustomStringConvertible {
    private var storage: sockaddr_in6
    package private(set) var length: socklen_t

    /// An empty address for the kernel to fill in (accept, getsockname, recvmsg).
    public init() {
        storage = sockaddr_in6()
        length = socklen_t(MemoryLayout<sockaddr_in6>.size)
    }

    /// From raw network-order address bytes: 4 for IPv4, 16 for IPv6.
    public init(ip bytes: [UInt8], port: UInt16) {
        self.init()
        if bytes.count == 4 {
            var sin = sockaddr_in()
            sin.sin_family = sa_family_t(AF_INET)
            sin.sin_port = port.bigEndian
            withUnsafeMutableBytes(of: &sin.sin_addr) { $0.copyBytes(from: bytes) }
            setStorage(sin)
        } else {
            precondition(bytes.count == 16, "an IP address has 4 or 16 bytes")
            var sin6 = sockaddr_in6()
            sin6.sin6_family = sa_family_t(AF_INET6)
            sin6.sin6_port = port.bigEndian
            withUnsafeMutableBytes(of: &sin6.sin6_addr) { $0.copyBytes(from: bytes) }
            setStorage(sin6)
        }
    }

    /// Parses `1.2.3.4` or `::1` (no brackets). nil if it does not parse.
    public init?(ip text: String, port: UInt16) {
        var v4 = in_addr()
        var v6 = in6_addr()
        if inet_pton(AF_INET, text, &v4) == 1 {
            self.init(ip: withUnsafeBytes(of: &v4) { Array($0) }, port: port)
        } else if inet_pton(AF_INET6, text, &v6) == 1 {
            self.init(ip: withUnsafeBytes(of: &v6) { Array($0) }, port: port)
        } else {
            return nil
        }
    }

    private mutating func setStorage<T>(_ value: T) {
        precondition(MemoryLayout<T>.size <= MemoryLayout<sockaddr_in6>.size)
        withUnsafeMutableBytes(of: &storage) { raw in
            raw.baseAddress!.assumingMemoryBound(to: T.self).pointee = value
        }
        length = socklen_t(MemoryLayout<T>.size)
    }

    public var family: Int32 { Int32(storage.sin6_family) }
    public var isV6: Bool { family == AF_INET6 }

    public var port: UInt16 {
        get {
            withUnsafeBytes(of: storage) { raw in
                // sin_port and sin6_port sit at the same offset.
                UInt16(bigEndian: raw.load(fromByteOffset: 2, as: UInt16.self))
            }
        }
        set {
            withUnsafeMutableBytes(of: &storage) { raw in
                raw.storeBytes(of: newValue.bigEndian, toByteOffset: 2, as: UInt16.self)
            }
        }
    }

    /// The address bytes in network order (4 or 16), lent to `body`.
    @inline(__always)
    package func withIPBytes<R>(_ body: (UnsafeRawBufferPointer) -> R) -> R {
        withUnsafeBytes(of: storage) { raw in
            body(UnsafeRawBufferPointer(rebasing: isV6 ? raw[8..<24] : raw[4..<8]))
        }
    }

    /// `::ffff:a.b.c.d`: an IPv4 client on a dual-stack IPv6 socket.
    package var isV4Mapped: Bool {
        withUnsafeBytes(of: storage) { raw in
            isV6 && raw[8..<18].allSatisfy { $0 == 0 } && raw[18] == 0xff && raw[19] == 0xff
        }
    }

    /// `0.0.0.0` or `::`: a socket bound to it receives on every local address.
    package var isWildcard: Bool {
        withUnsafeBytes(of: storage) { raw in
            isV6 ? raw[8..<24].allSatisfy { $0 == 0 } : raw[4..<8].allSatisfy { $0 == 0 }
        }
    }

    /// `1.2.3.4` or `::1`.
    public var ipText: String {
        var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        var copy = storage
        withUnsafeBytes(of: &copy) { raw in
            let src = raw.baseAddress! + (isV6 ? 8 : 4)
            _ = inet_ntop(family, src, &buffer, socklen_t(buffer.count))
        }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// `1.2.3.4:80` or `[::1]:80`.
    public var description: String { isV6 ? "[\(ipText)]:\(port)" : "\(ipText):\(port)" }

    /// Calls `body` with the address as the kernel's `sockaddr` pointer and length.
    public func withSockAddr<R>(_ body: (UnsafePointer<sockaddr>, socklen_t) throws -> R) rethrows -> R {
        var copy = storage
        return try withUnsafePointer(to: &copy) { p in
            try p.withMemoryRebound(to: sockaddr.self, capacity: 1) { try body($0, length) }
        }
    }

    /// Lets the kernel fill the address (accept, getsockname, recvfrom).
    /// Room for an IPv4 or IPv6 address only: the kernel cuts anything longer short.
    public mutating func withMutableSockAddr<R>(
        _ body: (UnsafeMutablePointer<sockaddr>, UnsafeMutablePointer<socklen_t>) throws -> R
    ) rethrows -> R {
        length = socklen_t(MemoryLayout<sockaddr_in6>.size)
        return try withUnsafeMutablePointer(to: &storage) { p in
            try p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                try withUnsafeMutablePointer(to: &length) { try body(sa, $0) }
            }
        }
    }

    public static func == (a: SocketAddress, b: SocketAddress) -> Bool {
        a.length == b.length && a.withSockAddr { pa, la in b.withSockAddr { pb, _ in memcmp(pa, pb, Int(la)) == 0 } }
    }

    public func hash(into hasher: inout Hasher) {
        withSockAddr { p, l in hasher.combine(bytes: UnsafeRawBufferPointer(start: p, count: Int(l))) }
    }
}
