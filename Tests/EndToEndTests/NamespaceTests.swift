// berth in the picture Docker users know: a container behind a bridge, berth on the host,
// clients on the host's loopback, on its bridge address, and outside. Root only.

import Glibc
import LinuxIO
import TestSupport
import XCTest

final class NamespaceTests: XCTestCase {
    private var topology: Topology!

    override func setUpWithError() throws {
        if let reason = Topology.unavailableReason {
            print("skipping namespace test: \(reason)")
            throw XCTSkip(reason)
        }
        topology = try Topology()
    }

    override func tearDown() {
        topology?.destroy()
        topology = nil
    }

    private func startBerth(_ arguments: [String], lines: Int) throws -> (Subprocess, [String]) {
        let (program, argv) = Topology.exec(in: topology.host, berthBinary(), ["run"] + arguments)
        let berth = try Subprocess(program, argv)
        let printed = berth.waitForLines(lines)
        guard printed.count >= lines else { throw TestFailure("berth printed \(printed); stderr: \(berth.stderr)") }
        return (berth, printed)
    }

    private func echo(from ns: String, to host: String, port: UInt16) throws -> String {
        try Topology.inside(ns) {
            let client = try TestSocket.connect(SocketAddress(ip: host, port: port)!, timeoutSeconds: 5)
            try client.send("from \(ns) to \(host)")
            client.shutdownWrite()
            return String(decoding: try client.receiveAll(), as: UTF8.self)
        }
    }

    func testContainerPortPublishedOnEveryHostAddress() throws {
        let server = try Topology.inside(topology.container) { try TestServer.echo(host: Topology.containerIP) }
        defer { server.stop() }
        let (berth, lines) = try startBerth(
            ["-p", "8080:\(server.address.port)", "-p", "127.0.0.1:8081:\(server.address.port)", Topology.containerIP],
            lines: 3
        )
        XCTAssertEqual(
            lines,
            [
                "\(server.address.port)/tcp -> 0.0.0.0:8080", "\(server.address.port)/tcp -> [::]:8080",
                "\(server.address.port)/tcp -> 127.0.0.1:8081",
            ]
        )
        let host = topology.host
        for (ns, address, port) in [
            (host, "127.0.0.1", UInt16(8080)), (host, "::1", 8080), (host, Topology.bridgeIP, 8080),
            (host, "127.0.0.1", 8081),
            (topology.client, Topology.hostOutsideIP, 8080), (topology.client, Topology.hostOutsideIPv6, 8080),
        ] {
            XCTAssertEqual(try echo(from: ns, to: address, port: port), "from \(ns) to \(address)")
        }
        // 8081 is bound to the host's loopback only: unreachable from outside.
        XCTAssertThrowsError(try echo(from: topology.client, to: Topology.hostOutsideIP, port: 8081))
        berth.signal(SIGTERM)
        XCTAssertEqual(berth.waitForExit(), 0)
    }

    /// Datagrams that reach berth together go to the container in one segmented send (UDP GSO)
    /// where they can; 3,000-byte ones cannot over the container's 1,500-byte link (the kernel
    /// refuses the segmented send: EMSGSIZE) and must still arrive, fragmented, one by one. berth
    /// is stopped while they are sent, so it reads them in one batch. Before the fix each refusal
    /// dropped one of them.
    func testDatagramsOverTheContainerLinksMTUArriveWhenTheyComeInOneBatch() throws {
        let backend = try Topology.inside(topology.container) {
            try TestUDPSocket(host: Topology.containerIP, timeoutMilliseconds: 2000)
        }
        let (berth, _) = try startBerth(
            ["-p", "127.0.0.1:8082:\(backend.localAddress.port)/udp", Topology.containerIP],
            lines: 1
        )
        let client = try Topology.inside(topology.host) { try TestUDPSocket() }
        let relay = SocketAddress(ip: "127.0.0.1", port: 8082)!
        try client.send(Array("open".utf8), to: relay)
        XCTAssertEqual(String(decoding: try backend.receive(), as: UTF8.self), "open")
        var sent: [[UInt8]] = []
        berth.signal(SIGSTOP)
        for (i, size) in (Array(repeating: 3000, count: 8) + Array(repeating: 1400, count: 8) + [3000, 3000])
            .enumerated()
        {
            let datagram = (0..<size).map { UInt8(truncatingIfNeeded: $0 &+ i) }
            try client.send(datagram, to: relay)
            sent.append(datagram)
        }
        berth.signal(SIGCONT)
        var got: [[UInt8]] = []
        for _ in sent { got.append(try backend.receive()) }
        XCTAssertEqual(got.map(\.count), sent.map(\.count))
        XCTAssertEqual(got, sent, "every datagram, intact and in order")
        berth.signal(SIGTERM)
        XCTAssertEqual(berth.waitForExit(), 0)
    }

    func testIPv6Container() throws {
        let server = try Topology.inside(topology.container) { try TestServer.echo(host: Topology.containerIPv6) }
        defer { server.stop() }
        let (berth, lines) = try startBerth(["-p", "\(server.address.port)", Topology.containerIPv6], lines: 2)
        let port = UInt16(lines[0].split(separator: ":").last!)!
        XCTAssertEqual(try echo(from: topology.host, to: "127.0.0.1", port: port), "from \(topology.host) to 127.0.0.1")
        XCTAssertEqual(
            try echo(from: topology.client, to: Topology.hostOutsideIPv6, port: port),
            "from \(topology.client) to \(Topology.hostOutsideIPv6)"
        )
        berth.signal(SIGTERM)
        XCTAssertEqual(berth.waitForExit(), 0)
    }
}
