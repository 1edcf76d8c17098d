// PROXY protocol headers (HAProxy's doc/proxy-protocol.txt): the bytes berth writes, and a
// backend that reads them through the relay, for both versions and both families.

import Glibc
import LinuxIO
import Mappings
import Synchronization
import TestSupport
import XCTest

@testable import Relay

/// What a PROXY header said: its protocol word and the addresses, or UNKNOWN / LOCAL.
struct ParsedProxyHeader: Equatable {
    var proto: String
    var source: String
    var destination: String
}

/// A small reader of both versions, written from the spec for these tests. Returns the header
/// and how many bytes it took, or nil if `bytes` does not start with a whole one.
func parseProxyHeader(_ bytes: [UInt8]) -> (ParsedProxyHeader, Int)? {
    if bytes.starts(with: Array("PROXY ".utf8)) {
        guard let end = (0..<(bytes.count - 1)).first(where: { bytes[$0] == 13 && bytes[$0 + 1] == 10 }), end <= 105
        else { return nil }
        let words = String(decoding: bytes[6..<end], as: UTF8.self).split(separator: " ").map(String.init)
        if words == ["UNKNOWN"] { return (ParsedProxyHeader(proto: "UNKNOWN", source: "", destination: ""), end + 2) }
        guard words.count == 5, ["TCP4", "TCP6"].contains(words[0]) else { return nil }
        let v6 = words[0] == "TCP6"
        func join(_ ip: String, _ port: String) -> String { v6 ? "[\(ip)]:\(port)" : "\(ip):\(port)" }
        return (
            ParsedProxyHeader(proto: words[0], source: join(words[1], words[3]), destination: join(words[2], words[4])),
            end + 2
        )
    }
    guard bytes.count >= 16, Array(bytes[0..<12]) == ProxyHeader.signature, bytes[12] >> 4 == 2 else { return nil }
    let length = Int(bytes[14]) << 8 | Int(bytes[15])
    guard bytes.count >= 16 + length else { return nil }
    let command = bytes[12] & 0x0F
    let family = bytes[13] >> 4
    let transport = bytes[13] & 0x0F
    if command == 0 || family == 0 {
        return (ParsedProxyHeader(proto: "LOCAL", source: "", destination: ""), 16 + length)
    }
    let size = family == 1 ? 4 : 16
    guard length >= 2 * size + 4 else { return nil }
    func address(_ at: Int) -> String {
        SocketAddress(
            ip: Array(bytes[at..<(at + size)]),
            port: UInt16(bytes[16 + 2 * size + (at == 16 ? 0 : 2)]) << 8
                | UInt16(bytes[16 + 2 * size + (at == 16 ? 1 : 3)])
        ).description
    }
    let name = (family == 1 ? "4" : "6") + (transport == 1 ? "/stream" : "/dgram")
    return (ParsedProxyHeader(proto: name, source: address(16), destination: address(16 + size)), 16 + length)
}

final class ProxyProtocolTests: XCTestCase {
    private func header(
        _ version: ProxyProtocol,
        _ source: String,
        _ sport: UInt16,
        _ destination: String,
        _ dport: UInt16
    ) -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: ProxyHeader.maximumLength)
        let n = buffer.withUnsafeMutableBytes {
            ProxyHeader.write(
                version,
                stream: true,
                source: SocketAddress(ip: source, port: sport)!,
                destination: SocketAddress(ip: destination, port: dport)!,
                into: $0
            )
        }
        return Array(buffer[0..<n])
    }

    func testVersionOneLinesAreTheSpecsExamples() {
        XCTAssertEqual(
            String(decoding: header(.v1, "192.168.0.1", 56324, "192.168.0.11", 443), as: UTF8.self),
            "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"
        )
        XCTAssertEqual(
            String(decoding: header(.v1, "2001:db8::1", 1, "::1", 65535), as: UTF8.self),
            "PROXY TCP6 2001:db8::1 ::1 1 65535\r\n"
        )
        // An IPv4 client on a dual-stack IPv6 socket is announced as the IPv4 client it is.
        XCTAssertEqual(
            String(decoding: header(.v1, "::ffff:198.18.0.7", 40000, "::ffff:198.18.0.1", 80), as: UTF8.self),
            "PROXY TCP4 198.18.0.7 198.18.0.1 40000 80\r\n"
        )
        // The longest line fits the room berth gives it.
        let longest = header(
            .v1,
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            65535,
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe",
            65535
        )
        XCTAssertEqual(longest.count, 104)
        XCTAssertEqual(longest.suffix(2), [13, 10])
    }

    func testVersionTwoBytes() {
        XCTAssertEqual(
            header(.v2, "198.18.0.7", 0x1234, "198.18.0.1", 80),
            ProxyHeader.signature + [0x21, 0x11, 0x00, 12, 198, 18, 0, 7, 198, 18, 0, 1, 0x12, 0x34, 0x00, 80]
        )
        let v6 = header(.v2, "fd00:b::2", 443, "::1", 8443)
        XCTAssertEqual(Array(v6[12..<16]), [0x21, 0x21, 0x00, 36])
        XCTAssertEqual(v6.count, 52)
        XCTAssertEqual(Array(v6[16..<32]), SocketAddress(ip: "fd00:b::2", port: 0)!.withIPBytes { Array($0) })
        XCTAssertEqual(Array(v6[48..<52]), [0x01, 0xBB, 0x20, 0xFB])
        var room = [UInt8](repeating: 0, count: 64)
        let n = room.withUnsafeMutableBytes {
            ProxyHeader.writeDatagram(
                source: FlowKey(SocketAddress(ip: "127.0.0.9", port: 5353)!),
                destinationHigh: FlowKey(SocketAddress(ip: "127.0.0.1", port: 0)!).high,
                destinationLow: 0,
                destinationPort: 53,
                into: $0
            )
        }
        XCTAssertEqual(
            Array(room[0..<n]),
            ProxyHeader.signature + [0x21, 0x12, 0x00, 12, 127, 0, 0, 9, 127, 0, 0, 1, 0x14, 0xE9, 0x00, 53]
        )
    }

    /// A backend that reads the header first, then talks first (server-first, as SMTP does):
    /// the header arrives although the client sends nothing, and names the client.
    private func checkThroughRelay(_ version: ProxyProtocol, host: String) throws {
        let seen = Mutex<(ParsedProxyHeader, [UInt8])?>(nil)
        let server = try TestServer { socket in
            var bytes: [UInt8] = []
            while parseProxyHeader(bytes) == nil, let chunk = try? socket.receive(max: 1), !chunk.isEmpty {
                bytes += chunk
            }
            guard let (header, length) = parseProxyHeader(bytes) else { return }
            try? socket.send("220 hello, \(header.source)\r\n")
            let rest = (try? socket.receive(exactly: 4)) ?? []
            seen.withLock { $0 = (header, Array(bytes[length...]) + rest) }
            try? socket.send("bye")
            socket.close()
        }
        var config = RelayConfig()
        config.proxyProtocol = version
        let relay = try RelayHarness(target: server.address, host: host, config: config)
        let client = try TestSocket.connect(relay.address)
        let me = try Socket.localAddress(client.fd)
        let greeting = String(decoding: try client.receive(exactly: "220 hello, \(me)\r\n".utf8.count), as: UTF8.self)
        XCTAssertEqual(greeting, "220 hello, \(me)\r\n", "the backend spoke first and named the client")
        try client.send("QUIT")
        XCTAssertEqual(try client.receiveAll(), Array("bye".utf8))
        let (header, after) = try XCTUnwrap(seen.withLock { $0 })
        let family = relay.address.isV6 ? "6" : "4"
        XCTAssertEqual(header.proto, version == .v1 ? "TCP\(family)" : "\(family)/stream")
        XCTAssertEqual(header.source, me.description)
        XCTAssertEqual(header.destination, relay.address.description)
        XCTAssertEqual(after, Array("QUIT".utf8), "the client's bytes follow the header, unchanged")
    }

    func testVersionOneIPv4ThroughTheRelay() throws { try checkThroughRelay(.v1, host: "127.0.0.1") }
    func testVersionTwoIPv4ThroughTheRelay() throws { try checkThroughRelay(.v2, host: "127.0.0.1") }
    /// An IPv6 client relayed to an IPv4 backend: the header names the IPv6 client.
    func testVersionOneIPv6ClientThroughTheRelay() throws { try checkThroughRelay(.v1, host: "::1") }
    func testVersionTwoIPv6ClientThroughTheRelay() throws { try checkThroughRelay(.v2, host: "::1") }

    /// UDP: a v2 DGRAM header in front of every datagram, and the datagram whole behind it.
    func testDatagramsCarryAVersionTwoHeader() throws {
        let backend = try TestUDPSocket()
        var config = RelayConfig()
        config.proxyProtocolUDP = true
        let relay = try RelayHarness(udpTarget: backend.localAddress, config: config)
        let client = try TestUDPSocket()
        for i in 0..<3 {
            try client.send(Array("datagram \(i)".utf8), to: relay.address)
            let (bytes, from) = try backend.receiveFrom()
            let (header, length) = try XCTUnwrap(parseProxyHeader(bytes))
            XCTAssertEqual(
                header,
                ParsedProxyHeader(
                    proto: "4/dgram",
                    source: client.localAddress.description,
                    destination: relay.address.description
                )
            )
            XCTAssertEqual(String(decoding: bytes[length...], as: UTF8.self), "datagram \(i)")
            // Replies go back without any header.
            try backend.send(Array("reply \(i)".utf8), to: from)
            XCTAssertEqual(String(decoding: try client.receive(), as: UTF8.self), "reply \(i)")
        }
        XCTAssertEqual(
            relay.stop().bytesToBackend,
            UInt64(3 * "datagram 0".utf8.count),
            "payload bytes, headers not counted"
        )
    }
}
