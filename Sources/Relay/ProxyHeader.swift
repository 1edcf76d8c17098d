// The PROXY protocol header (HAProxy's doc/proxy-protocol.txt) that tells a backend who the
// client is. It describes the client's side of the proxy: the client's address and port as
// the source, and the address and port the client connected (or sent) to as the destination,
// whatever family the backend connection has. So an IPv4 client relayed to an IPv6 backend
// is announced as TCP4 (and the other way round as TCP6): the addresses are the client's.
// An IPv4 client on a dual-stack IPv6 socket (::ffff:a.b.c.d at both ends) is announced as
// IPv4, as the client sees it.

import LinuxIO
import Mappings

enum ProxyHeader {
    /// v2's signature, the first 12 bytes of every v2 header.
    static let signature: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A]
    /// The largest header berth writes: a v1 line of two full IPv6 addresses is 104 bytes, a
    /// v2 header of two IPv6 addresses 52.
    static let maximumLength = 108

    /// Writes the header into `buffer` (at least `maximumLength` bytes); returns its length.
    /// `stream`: TCP (true) or UDP (false, v2 only).
    static func write(
        _ version: ProxyProtocol,
        stream: Bool,
        source: SocketAddress,
        destination: SocketAddress,
        into buffer: UnsafeMutableRawBufferPointer
    ) -> Int {
        let v4 = (!source.isV6 && !destination.isV6) || (source.isV4Mapped && destination.isV4Mapped)
        let known = v4 || (source.isV6 && destination.isV6)
        switch version {
        case .v1:
            return writeLine(known ? (v4 ? "TCP4" : "TCP6") : nil, source, destination, v4: v4, into: buffer)
        case .v2:
            return writeBinary(stream: stream, known: known, v4: v4, source, destination, into: buffer)
        }
    }

    private static func writeLine(
        _ family: String?,
        _ source: SocketAddress,
        _ destination: SocketAddress,
        v4: Bool,
        into buffer: UnsafeMutableRawBufferPointer
    ) -> Int {
        let line: String
        if let family {
            line =
                "PROXY \(family) \(text(source, v4: v4)) \(text(destination, v4: v4)) \(source.port) \(destination.port)\r\n"
        } else {
            // Families that differ cannot happen on one client connection; the spec's answer anyway.
            line = "PROXY UNKNOWN\r\n"
        }
        var n = 0
        for byte in line.utf8 where n < buffer.count {
            buffer[n] = byte
            n += 1
        }
        return n
    }

    /// `1.2.3.4` for an IPv4 (or IPv4-mapped) address, else the IPv6 text.
    private static func text(_ address: SocketAddress, v4: Bool) -> String {
        guard v4 && address.isV6 else { return address.ipText }
        return address.withIPBytes { "\($0[12]).\($0[13]).\($0[14]).\($0[15])" }
    }

    private static func writeBinary(
        stream: Bool,
        known: Bool,
        v4: Bool,
        _ source: SocketAddress,
        _ destination: SocketAddress,
        into buffer: UnsafeMutableRawBufferPointer
    ) -> Int {
        for (i, byte) in signature.enumerated() { buffer[i] = byte }
        // Version 2, command PROXY.
        buffer[12] = 0x21
        guard known else {
            // AF_UNSPEC: the receiver uses the connection's own addresses.
            buffer[13] = 0x00
            buffer[14] = 0
            buffer[15] = 0
            return 16
        }
        // Address family (1 = INET, 2 = INET6) in the high nibble, transport (1 = STREAM, 2 = DGRAM) in the low.
        buffer[13] = (v4 ? 0x10 : 0x20) | (stream ? 0x01 : 0x02)
        let addressLength = v4 ? 4 : 16
        let length = 2 * addressLength + 4
        buffer[14] = UInt8(length >> 8)
        buffer[15] = UInt8(length & 0xFF)
        var at = 16
        func put(_ address: SocketAddress) {
            address.withIPBytes { bytes in
                // An IPv4-mapped address as IPv4: its last four bytes.
                let start = bytes.count == 16 && addressLength == 4 ? 12 : 0
                for k in 0..<addressLength { buffer[at + k] = bytes[start + k] }
            }
            at += addressLength
        }
        func put(_ port: UInt16) {
            buffer[at] = UInt8(port >> 8)
            buffer[at + 1] = UInt8(port & 0xFF)
            at += 2
        }
        put(source)
        put(destination)
        put(source.port)
        put(destination.port)
        return at
    }

    /// The v2 header of a UDP datagram from `source` to the local address `destination` (a
    /// flow key's raw words, as `FlowKey` and `PacketInfo` keep them) and port; no allocation.
    static func writeDatagram(
        source: FlowKey,
        destinationHigh: UInt64,
        destinationLow: UInt64,
        destinationPort: UInt16,
        into buffer: UnsafeMutableRawBufferPointer
    ) -> Int {
        for (i, byte) in signature.enumerated() { buffer[i] = byte }
        buffer[12] = 0x21
        let v6 = source.isV6
        buffer[13] = (v6 ? 0x20 : 0x10) | 0x02
        let addressLength = v6 ? 16 : 4
        let length = 2 * addressLength + 4
        buffer[14] = UInt8(length >> 8)
        buffer[15] = UInt8(length & 0xFF)
        var at = 16
        func put(_ high: UInt64, _ low: UInt64) {
            withUnsafeBytes(of: high) { for k in 0..<min(8, addressLength) { buffer[at + k] = $0[k] } }
            if v6 { withUnsafeBytes(of: low) { for k in 0..<8 { buffer[at + 8 + k] = $0[k] } } }
            at += addressLength
        }
        func put(_ port: UInt16) {
            buffer[at] = UInt8(port >> 8)
            buffer[at + 1] = UInt8(port & 0xFF)
            at += 2
        }
        put(source.high, source.low)
        put(destinationHigh, destinationLow)
        put(source.port)
        put(destinationPort)
        return at
    }
}
