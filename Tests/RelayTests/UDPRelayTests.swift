import Glibc
import LinuxIO
import Relay
import Synchronization
import TestSupport
import XCTest

/// Failures collected from client threads.
private final class Failures: Sendable {
    private let list = Mutex<[String]>([])
    func add(_ text: String) { list.withLock { $0.append(text) } }
    var all: [String] { list.withLock { $0 } }
}

final class UDPRelayTests: XCTestCase {
    private static let sizesV4 = [0, 1, 1400, 9000, 30000, 65507]
    private static let sizesV6 = [0, 1, 1400, 9000, 30000, 65527]

    /// A relay in front of a backend socket that the test answers from itself, and a client
    /// connected to the relay; `configure` adjusts the relay's settings.
    private func relayToBackend(
        frozenClock: Bool = false,
        _ configure: (inout RelayConfig) -> Void = { _ in }
    ) throws -> (backend: TestUDPSocket, relay: RelayHarness, client: TestUDPSocket) {
        let backend = try TestUDPSocket()
        var config = RelayConfig()
        configure(&config)
        let relay = try RelayHarness(udpTarget: backend.localAddress, config: config, frozenClock: frozenClock)
        let client = try TestUDPSocket()
        try client.connect(relay.address)
        return (backend, relay, client)
    }

    func testEchoThroughRelay() throws {
        let server = try TestUDPEchoServer()
        let relay = try RelayHarness(udpTarget: server.address)
        let client = try TestUDPSocket()
        try client.connect(relay.address)
        try client.send("hello, berth")
        XCTAssertEqual(String(decoding: try client.receive(), as: UTF8.self), "hello, berth")
        let counters = relay.stop()
        XCTAssertEqual(counters.datagramsToBackend, 1)
        XCTAssertEqual(counters.datagramsToClient, 1)
        XCTAssertEqual(counters.bytesToBackend, 12)
        XCTAssertEqual(counters.bytesToClient, 12)
        XCTAssertEqual(counters.flowsCreated, 1)
        XCTAssertEqual(counters.dropped, 0)
    }

    func testTwentyClientsEachGetExactlyTheirOwnReplies() throws {
        let server = try TestUDPEchoServer()
        let relay = try RelayHarness(udpTarget: server.address)
        let address = relay.address
        let failures = Failures()
        var threads: [LoopThread] = []
        for c in 0..<20 {
            threads.append(
                try LoopThread(name: "udp-client-\(c)") {
                    do {
                        let client = try TestUDPSocket()
                        try client.connect(address)
                        // Four in flight per client, so the relay's batches mix clients.
                        var outstanding = Set<String>()
                        var next = 0
                        while next < 4 {
                            let payload = "client \(c) datagram \(next)"
                            try client.send(payload)
                            outstanding.insert(payload)
                            next += 1
                        }
                        while !outstanding.isEmpty {
                            let reply = String(decoding: try client.receive(), as: UTF8.self)
                            guard outstanding.remove(reply) != nil else {
                                failures.add("client \(c) got \(reply)")
                                return
                            }
                            if next < 200 {
                                let payload = "client \(c) datagram \(next)"
                                try client.send(payload)
                                outstanding.insert(payload)
                                next += 1
                            }
                        }
                    } catch {
                        failures.add("client \(c): \(error)")
                    }
                }
            )
        }
        for thread in threads { thread.join() }
        XCTAssertEqual(failures.all, [])
        XCTAssertEqual(server.senders.count, 20, "one backend source address per client")
        let counters = relay.stop()
        XCTAssertEqual(counters.flowsCreated, 20)
        XCTAssertEqual(counters.datagramsToBackend, 4000)
        XCTAssertEqual(counters.datagramsToClient, 4000)
    }

    private func checkEverySize(listener: String, backend: String, sizes: [Int]) throws {
        let server = try TestUDPEchoServer(host: backend)
        let relay = try RelayHarness(udpTarget: server.address, host: listener)
        let client = try TestUDPSocket(host: listener)
        try client.connect(relay.address)
        for (n, size) in sizes.enumerated() {
            let payload = pattern(size, seed: UInt64(n + 1))
            try client.send(payload)
            let reply = try client.receive()
            XCTAssertEqual(reply.count, size, "\(listener) → \(backend): \(size) bytes")
            XCTAssertTrue(reply == payload, "\(listener) → \(backend): \(size) bytes differ")
        }
        let counters = relay.stop()
        let total = UInt64(sizes.reduce(0, +))
        XCTAssertEqual(counters.datagramsToBackend, UInt64(sizes.count))
        XCTAssertEqual(counters.datagramsToClient, UInt64(sizes.count))
        XCTAssertEqual(counters.bytesToBackend, total)
        XCTAssertEqual(counters.bytesToClient, total)
        XCTAssertEqual(counters.truncated, 0)
        XCTAssertEqual(counters.dropped, 0)
    }

    func testEverySizeUpToTheMaximumBothWaysOverIPv4() throws {
        try checkEverySize(listener: "127.0.0.1", backend: "127.0.0.1", sizes: Self.sizesV4)
    }

    func testEverySizeUpToTheMaximumBothWaysOverIPv6() throws {
        try checkEverySize(listener: "::1", backend: "::1", sizes: Self.sizesV6)
    }

    func testIPv6ListenerToIPv4Backend() throws {
        try checkEverySize(listener: "::1", backend: "127.0.0.1", sizes: Self.sizesV4)
    }

    func testIPv4ListenerToIPv6Backend() throws {
        try checkEverySize(listener: "127.0.0.1", backend: "::1", sizes: Self.sizesV4)
    }

    func testADatagramTooLargeForTheBackendsFamilyIsDroppedAndTheFlowGoesOn() throws {
        let server = try TestUDPEchoServer(host: "127.0.0.1")
        let relay = try RelayHarness(udpTarget: server.address, host: "::1")
        let client = try TestUDPSocket(host: "::1")
        try client.connect(relay.address)
        try client.send(pattern(65527, seed: 1))  // fine over IPv6, 20 bytes too many for IPv4
        try client.send("next")
        XCTAssertEqual(String(decoding: try client.receive(), as: UTF8.self), "next")
        let counters = relay.stop()
        XCTAssertEqual(counters.dropped, 1)
        XCTAssertEqual(counters.flowsCreated, 1)
    }

    func testZeroLengthDatagramsAreForwardedBothWays() throws {
        let (backend, relay, client) = try relayToBackend()
        try client.send([])
        let (bytes, flow) = try backend.receiveFrom()
        XCTAssertEqual(bytes, [])
        try backend.send([], to: flow)
        try backend.send(Array("after".utf8), to: flow)
        try backend.send([], to: flow)
        XCTAssertEqual(try client.receive(), [])
        XCTAssertEqual(try client.receive(), Array("after".utf8))
        XCTAssertEqual(try client.receive(), [])
        let counters = relay.stop()
        XCTAssertEqual(counters.datagramsToBackend, 1)
        XCTAssertEqual(counters.datagramsToClient, 3)
    }

    // MARK: expiry and eviction

    func testOneWayStreamKeepsItsBackendPortAndAfterIdleANewFlowGetsANewOne() throws {
        let (backend, relay, client) = try relayToBackend(frozenClock: true) { $0.udpTimeout = .seconds(1) }
        // 2.5 s of datagrams on the loop's clock, one every 50 ms, never answered: more than twice
        // the timeout.
        var ports = Set<UInt16>()
        for i in 0..<50 {
            try client.send("one way \(i)")
            let (bytes, from) = try backend.receiveFrom()
            XCTAssertEqual(String(decoding: bytes, as: UTF8.self), "one way \(i)")
            ports.insert(from.port)
            relay.advanceClock(by: .milliseconds(50))
        }
        XCTAssertEqual(ports.count, 1, "client → backend traffic alone keeps the flow and its port")
        let oldPort = try XCTUnwrap(ports.first)

        // Idle now: the flow expires, closing its socket, which frees its port. Holding that
        // port then makes sure the next flow cannot get the same one back by chance.
        relay.advanceClock(by: .seconds(2))
        var held: TestUDPSocket?
        XCTAssertTrue(
            eventually {
                held = claimUDPPort("127.0.0.1", oldPort)
                return held != nil
            },
            "the idle flow never expired"
        )
        try client.send("after idle")
        let (bytes, from) = try backend.receiveFrom()
        XCTAssertEqual(String(decoding: bytes, as: UTF8.self), "after idle")
        XCTAssertNotEqual(from.port, oldPort, "a new flow, from a new port")
        let counters = relay.stop()
        XCTAssertEqual(counters.flowsCreated, 2)
        XCTAssertEqual(counters.flowsExpired, 1)
        withExtendedLifetime(held) {}
    }

    func testBackendToClientStreamAloneKeepsTheFlowAlive() throws {
        let (backend, relay, client) = try relayToBackend(frozenClock: true) { $0.udpTimeout = .seconds(1) }
        try client.send("open")
        let (_, flow) = try backend.receiveFrom()
        for i in 0..<50 {
            try backend.send(Array("down \(i)".utf8), to: flow)
            XCTAssertEqual(String(decoding: try client.receive(), as: UTF8.self), "down \(i)")
            relay.advanceClock(by: .milliseconds(50))
        }
        XCTAssertNil(claimUDPPort("127.0.0.1", flow.port), "the flow's socket is still open")
        let counters = relay.stop()
        XCTAssertEqual(counters.flowsExpired, 0)
        XCTAssertEqual(counters.flowsCreated, 1)
        XCTAssertEqual(counters.datagramsToClient, 50)
    }

    func testAFullTableEvictsTheLeastRecentlyActiveFlow() throws {
        let backend = try TestUDPSocket()
        var config = RelayConfig()
        config.udpMaxFlows = 3
        config.udpMaxAnswered = 3  // the cap alone: every flow here is an answered one
        let relay = try RelayHarness(udpTarget: backend.localAddress, config: config)
        let clients = try (0..<4).map { _ in try TestUDPSocket() }
        for c in clients { try c.connect(relay.address) }

        /// Client → backend → client; returns the flow's port as the backend saw it.
        func roundTrip(_ c: Int) throws -> UInt16 {
            try clients[c].send("from \(c)")
            let (bytes, flow) = try backend.receiveFrom()
            XCTAssertEqual(String(decoding: bytes, as: UTF8.self), "from \(c)")
            try backend.send(bytes, to: flow)
            XCTAssertEqual(try clients[c].receive(), bytes)
            return flow.port
        }

        let a = try roundTrip(0)
        let b = try roundTrip(1)
        let c = try roundTrip(2)
        XCTAssertEqual(try roundTrip(0), a, "A is active again: B is now the least recently active")
        let d = try roundTrip(3)  // the table is full: B goes

        // Which sockets are gone says which flows were: B's port is free, the others are held.
        let heldB = claimUDPPort("127.0.0.1", b)
        XCTAssertNotNil(heldB, "B's flow, the least recently active, was evicted")
        XCTAssertNil(claimUDPPort("127.0.0.1", a), "A's flow is still open")
        XCTAssertNil(claimUDPPort("127.0.0.1", c), "C's flow is still open")
        XCTAssertNil(claimUDPPort("127.0.0.1", d), "D's flow is open")

        // B comes back as a new flow (its old port is held, so a new one), evicting C now.
        XCTAssertNotEqual(try roundTrip(1), b)
        XCTAssertEqual(try roundTrip(0), a)
        XCTAssertEqual(try roundTrip(3), d)
        let counters = relay.stop()
        XCTAssertEqual(counters.flowsCreated, 5)
        XCTAssertEqual(counters.flowsEvicted, 2)
        withExtendedLifetime(heldB) {}
    }

    // MARK: reply source

    func testOnAWildcardListenerTheReplyLeavesFromTheAddressTheClientSentTo() throws {
        let server = try TestUDPEchoServer()
        let relay = try RelayHarness(udpTarget: server.address, host: "0.0.0.0")
        let port = relay.address.port
        let client = try TestUDPSocket(host: "127.0.0.1")
        // One client, one flow, three local addresses: each reply comes from the one just used.
        for host in ["127.0.0.2", "127.0.0.1", "127.0.0.3"] {
            try client.send(Array(host.utf8), to: SocketAddress(ip: host, port: port)!)
            let (bytes, from) = try client.receiveFrom()
            XCTAssertEqual(String(decoding: bytes, as: UTF8.self), host)
            XCTAssertEqual(from, SocketAddress(ip: host, port: port)!, "the reply must come from where the client sent")
        }
        // A connected client takes datagrams only from the address it connected to.
        let connected = try TestUDPSocket()
        try connected.connect(SocketAddress(ip: "127.0.0.2", port: port)!)
        try connected.send("connected")
        XCTAssertEqual(String(decoding: try connected.receive(), as: UTF8.self), "connected")
        XCTAssertEqual(relay.stop().flowsCreated, 2)
    }

    func testOnAnIPv6WildcardListenerTheReplyComesFromTheAddressTheClientSentTo() throws {
        let server = try TestUDPEchoServer()
        let relay = try RelayHarness(udpTarget: server.address, host: "::")
        let target = SocketAddress(ip: "::1", port: relay.address.port)!
        let client = try TestUDPSocket(host: "::1")
        try client.send(Array("v6".utf8), to: target)
        let (bytes, from) = try client.receiveFrom()
        XCTAssertEqual(bytes, Array("v6".utf8))
        XCTAssertEqual(from, target)
    }

    func testIPv6WildcardBesideIPv4WildcardOnTheSamePort() throws {
        let server = try TestUDPEchoServer()
        let v4 = try RelayHarness(udpTarget: server.address, host: "0.0.0.0")
        let port = v4.address.port
        let v6 = try RelayHarness(udpTarget: server.address, host: "::", port: port)
        XCTAssertEqual(v6.address.port, port)
        for host in ["127.0.0.1", "::1"] {
            let client = try TestUDPSocket(host: host)
            try client.connect(SocketAddress(ip: host, port: port)!)
            try client.send("to \(host)")
            XCTAssertEqual(String(decoding: try client.receive(), as: UTF8.self), "to \(host)")
        }
        XCTAssertEqual(v4.stop().flowsCreated, 1, "IPv4 clients reach the IPv4 socket")
        XCTAssertEqual(v6.stop().flowsCreated, 1, "and IPv6 ones the IPv6 socket (V6ONLY)")
    }

    func testAnAdoptedListenerWithoutPacketInfoStillRepliesFromWhereTheKernelChooses() throws {
        let server = try TestUDPEchoServer()
        func adoptedWildcard() throws -> Listener {
            let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
            let any = SocketAddress(ip: "0.0.0.0", port: 0)!
            XCTAssertEqual(any.withSockAddr { bind(fd, $0, $1) }, 0)
            return try Listener.adopt(Descriptor(taking: fd))
        }
        // Adopting a wildcard socket turns IP_PKTINFO on.
        let adopted = try RelayHarness(listener: adoptedWildcard(), target: server.address)
        let client = try TestUDPSocket(host: "127.0.0.1")
        let to = SocketAddress(ip: "127.0.0.2", port: adopted.address.port)!
        try client.send(Array("adopted".utf8), to: to)
        XCTAssertEqual(try client.receiveFrom().from, to)

        // Without it, the datagram still goes both ways; the kernel picks the source.
        let listener = try adoptedWildcard()
        try Socket.setPacketInfo(listener.descriptor, v6: false, false)
        let plain = try RelayHarness(listener: listener, target: server.address)
        try client.send(Array("plain".utf8), to: SocketAddress(ip: "127.0.0.2", port: plain.address.port)!)
        let (bytes, from) = try client.receiveFrom()
        XCTAssertEqual(bytes, Array("plain".utf8))
        XCTAssertEqual(from, SocketAddress(ip: "127.0.0.1", port: plain.address.port)!)
    }

    // MARK: errors

    func testBackendDownThenUp() throws {
        let port = unusedUDPPort()
        let relay = try RelayHarness(udpTarget: SocketAddress(ip: "127.0.0.1", port: port)!)
        let client = try TestUDPSocket(timeoutMilliseconds: 300)
        try client.connect(relay.address)
        // Down: the kernel answers the relay's flow with ICMP port unreachable. The client hears
        // nothing at all: not an error (ECONNREFUSED would mean an ICMP reached it), no data.
        for i in 0..<3 {
            try client.send("while down \(i)")
            let outcome = client.receiveOutcome()
            XCTAssertNil(outcome.bytes)
            XCTAssertEqual(outcome.errno, EAGAIN, "got \(errnoText(outcome.errno))")
        }

        // Up: the same flow carries datagrams again.
        let server = try TestUDPEchoServer(port: port)
        var answered = false
        for i in 0..<50 where !answered {
            try client.send("up \(i)")
            if let bytes = client.receiveOutcome().bytes {
                XCTAssertTrue(String(decoding: bytes, as: UTF8.self).hasPrefix("up "))
                answered = true
            }
        }
        XCTAssertTrue(answered, "no reply once the backend was up")
        XCTAssertEqual(server.senders.count, 1)
        let counters = relay.stop()
        XCTAssertGreaterThanOrEqual(counters.backendErrors, 1)
        XCTAssertEqual(counters.flowsCreated, 1, "the flow lived through the backend's absence")
    }

    func testFlowSocketsAreClosedWhenTheRelayStops() throws {
        let server = try TestUDPEchoServer()
        let relay = try RelayHarness(udpTarget: server.address)
        let before = openSocketCount()
        // Clients stay open to the end: a closed one's port could go to the next client, which
        // would then share its flow.
        var clients: [TestUDPSocket] = []
        for i in 0..<100 {
            let client = try TestUDPSocket()
            try client.connect(relay.address)
            try client.send("\(i)")
            XCTAssertEqual(try client.receive(), Array("\(i)".utf8))
            clients.append(client)
        }
        XCTAssertGreaterThanOrEqual(openSocketCount(), before + 200, "a socket per flow, beside each client's own")
        let counters = relay.stop()
        XCTAssertEqual(counters.flowsCreated, 100)
        XCTAssertEqual(counters.flowsActive, 0)
        XCTAssertEqual(openSocketCount(), before + 100, "only the clients' sockets remain")
        clients.removeAll()
        XCTAssertEqual(openSocketCount(), before)
    }
}
