// Publishing as bench/ and the CLI drive it: bind, run on several loops, stop, and nothing left.

import Glibc
import LinuxIO
import Mappings
import Publishing
import TestSupport
import XCTest

final class PublisherTests: XCTestCase {

    /// A bound port's address as the kernel path, log names and socket activation read it.
    func testAnIPAddressFromASocketAddress() throws {
        for text in ["127.0.0.1", "198.18.0.7", "::1", "fd00:b::2", "::ffff:10.0.0.1", "::"] {
            let address = try XCTUnwrap(SocketAddress(ip: text, port: 8080))
            XCTAssertEqual(IPAddress(address), IPAddress(text), text)
        }
        let mapped = try XCTUnwrap(SocketAddress(ip: "::ffff:10.0.0.1", port: 1))
        XCTAssertEqual(IPAddress(mapped).unmapped, .v4(10, 0, 0, 1))
    }

    private func publisher(threads: Int) -> Publisher {
        var options = PublishOptions()
        options.threads = threads
        options.mode = .userspace
        return Publisher(options: options)
    }

    private func bindAgain(_ address: SocketAddress, type: __socket_type) throws {
        let socket = try Socket.make(family: address.family, type: Int32(type.rawValue))
        try Socket.setOption(socket.raw, SOL_SOCKET, SO_REUSEADDR, 1)
        try Socket.bind(socket.raw, address)
        if type == SOCK_STREAM { try Socket.listen(socket.raw, backlog: 1) }
    }

    /// After `run` returns and the publisher is gone, every listener, connection, flow, pipe,
    /// epoll and eventfd is closed: the ports bind again and the descriptor count is back where
    /// it was (before the fix: 32 -> 40, and the port stayed bound).
    func testAStoppedPublisherLeavesNothingOpen() throws {
        let tcp = try TestServer.echo()
        let udp = try TestUDPEchoServer()
        let before = openDescriptorCount()
        var publisher: Publisher? = self.publisher(threads: 2)
        let ports = try XCTUnwrap(publisher).bind(
            try loopbackMappings(["127.0.0.1::\(tcp.address.port)"])
                + loopbackMappings(["127.0.0.1::\(udp.address.port)/udp"])
        )
        XCTAssertEqual(ports.count, 2)
        let stop = try runInBackground(try XCTUnwrap(publisher))
        // A connection and a UDP flow still open when it stops.
        let client = try TestSocket.connect(ports[0].address)
        try client.send("open")
        XCTAssertEqual(try client.receive(exactly: 4), Array("open".utf8))
        let datagrams = try TestUDPSocket()
        try datagrams.send(Array("flow".utf8), to: ports[1].address)
        XCTAssertEqual(try datagrams.receive(), Array("flow".utf8))
        stop()
        XCTAssertEqual(client.receiveOutcome().errno, ECONNRESET, "an open connection is reset when its loop stops")
        client.close()
        datagrams.close()
        XCTAssertNoThrow(try bindAgain(ports[0].address, type: SOCK_STREAM), "the TCP port is still bound")
        XCTAssertNoThrow(try bindAgain(ports[1].address, type: SOCK_DGRAM), "the UDP port is still bound")
        publisher?.close()
        publisher = nil
        // The echo servers' sides of the connection may still be closing.
        XCTAssertTrue(
            eventually { openDescriptorCount() <= before + 1 },
            "\(before) before, \(openDescriptorCount()) after"
        )
    }

    /// Each loop has its own listener; clients spread over them, and every one is served.
    func testEveryLoopServesItsOwnListener() throws {
        let tcp = try TestServer.echo()
        let udp = try TestUDPEchoServer()
        let publisher = self.publisher(threads: 3)
        let ports = try publisher.bind(
            try loopbackMappings(["127.0.0.1::\(tcp.address.port)"])
                + loopbackMappings(["127.0.0.1::\(udp.address.port)/udp"])
        )
        let stop = try runInBackground(publisher)
        defer { stop() }
        for i in 0..<60 {
            let c = try TestSocket.connect(ports[0].address)
            try c.send("tcp \(i);")
            XCTAssertEqual(String(decoding: try c.receive(exactly: "tcp \(i);".utf8.count), as: UTF8.self), "tcp \(i);")
            let d = try TestUDPSocket()
            try d.send(Array("udp \(i)".utf8), to: ports[1].address)
            XCTAssertEqual(String(decoding: try d.receive(), as: UTF8.self), "udp \(i)")
        }
    }

    /// `--udp-max-flows` caps a mapping's flows over all its loops: 100 clients through 2 loops
    /// with a cap of 10 leave 10 flows open, not 10 per loop (before the fix: 20), and the
    /// mapping's counters say how many were evicted.
    func testTheUDPFlowCapIsPerMappingAcrossLoops() throws {
        let backend = try TestUDPSocket()  // never answers: every flow awaits its reply
        var options = PublishOptions()
        options.threads = 2
        options.mode = .userspace
        options.relay.udpMaxFlows = 10
        let publisher = Publisher(options: options)
        let added = try publisher.add(try loopbackMappings(["127.0.0.1::\(backend.localAddress.port)/udp"]))
        let stop = try runInBackground(publisher)
        defer { stop() }
        var clients: [TestUDPSocket] = []
        for i in 0..<100 {
            let client = try TestUDPSocket()
            try client.send(Array("client \(i)".utf8), to: added.ports[0].address)
            clients.append(client)
        }
        var m = publisher.metrics()
        XCTAssertTrue(
            eventually {
                m = publisher.metrics()
                return m.mappings.map { $0.counters.datagramsToBackend + $0.counters.dropped }.reduce(0, +) == 100
            },
            "\(m.mappings.map(\.counters))"
        )
        let udp = try XCTUnwrap(m.mappings.first)
        XCTAssertEqual(m.mappings.count, 1)
        XCTAssertEqual(udp.counters.flowsActive, 10, "the cap holds for the mapping, over both loops")
        XCTAssertEqual(udp.counters.flowsCreated - udp.counters.flowsEvicted, 10)
        XCTAssertEqual(udp.counters.flowsExpired, 0)
        XCTAssertGreaterThanOrEqual(udp.counters.flowsEvicted, 80)
        let lines = m.prometheusText().split(separator: "\n")
        XCTAssertTrue(
            lines.contains {
                $0.hasPrefix("berth_udp_flows_evicted_total{") && $0.hasSuffix("} \(udp.counters.flowsEvicted)")
            },
            "the evictions are in the mapping's metrics"
        )
        XCTAssertTrue(lines.contains { $0.hasPrefix("berth_udp_flows_active{") && $0.hasSuffix("} 10") })
        withExtendedLifetime(clients) {}
    }

    /// One-shot exchanges (each client one request, its echo) hold the answered pool, a quarter of
    /// `--udp-max-flows` by default and split over the loops, not the cap: 100 clients through 2
    /// loops with a cap of 40 leave at most 10 flows open, and the metrics count the rest as
    /// answered flows closed, none evicted for the cap. Every client got its answer.
    func testAnsweredOneShotFlowsAreBoundedByTheirPoolOverLoops() throws {
        let backend = try TestUDPEchoServer()
        var options = PublishOptions()
        options.threads = 2
        options.mode = .userspace
        options.relay.udpMaxFlows = 40
        let publisher = Publisher(options: options)
        let added = try publisher.add(try loopbackMappings(["127.0.0.1::\(backend.address.port)/udp"]))
        let stop = try runInBackground(publisher)
        defer { stop() }
        // Every client stays open to the end: a closed one's port could go to the next, whose
        // datagram would then join the old flow if the pool still holds it (99 flows, not 100).
        var clients: [TestUDPSocket] = []
        for i in 0..<100 {
            let client = try TestUDPSocket()
            clients.append(client)
            try client.send(Array("client \(i)".utf8), to: added.ports[0].address)
            XCTAssertEqual(String(decoding: try client.receive(), as: UTF8.self), "client \(i)")
        }
        var m = publisher.metrics()
        XCTAssertTrue(
            eventually {
                m = publisher.metrics()
                let answered = m.mappings.map(\.counters.datagramsToClient).reduce(0, +)
                return answered == 100
                    && m.mappings.map { $0.counters.flowsCreated - $0.counters.answeredEvicted }.reduce(0, +) <= 10
            },
            "\(m.mappings.map(\.counters))"
        )
        let udp = try XCTUnwrap(m.mappings.first)
        XCTAssertLessThanOrEqual(udp.counters.flowsActive, 10, "5 answered flows per loop")
        XCTAssertEqual(udp.counters.flowsCreated, 100)
        XCTAssertEqual(udp.counters.flowsEvicted, 0, "none for the cap")
        XCTAssertEqual(udp.counters.datagramsToClient, 100)
        let lines = m.prometheusText().split(separator: "\n")
        XCTAssertTrue(
            lines.contains {
                $0.hasPrefix("berth_udp_flows_answered_evicted_total{")
                    && $0.hasSuffix("} \(udp.counters.answeredEvicted)")
            },
            "the answered flows closed are in the mapping's metrics"
        )
        withExtendedLifetime(clients) {}
    }

    /// A second publisher (another berth) cannot join the first one's SO_REUSEPORT group.
    func testAPortHeldByAnotherPublisherIsInUse() throws {
        let tcp = try TestServer.echo()
        let first = publisher(threads: 2)
        let ports = try first.bind(
            try loopbackMappings(["127.0.0.1::\(tcp.address.port)", "127.0.0.1::\(tcp.address.port)/udp"])
        )
        for (port, proto) in zip(ports, ["tcp", "udp"]) {
            let second = publisher(threads: 2)
            let spec = "127.0.0.1:\(port.address.port):\(tcp.address.port)/\(proto)"
            XCTAssertThrowsError(try second.bind(try loopbackMappings([spec]))) { error in
                XCTAssertEqual("\(error)", "\(tcp.address.port)/\(proto): bind \(port.address): address already in use")
            }
        }
    }

    /// Ports added and removed while the loops run: an added port serves at once on every loop;
    /// a removed one refuses new clients at once and frees its port, while a connection already
    /// open goes on until the drain time is up and is then reset. Another port's connection
    /// moves bytes undisturbed all along, through 200 adds and removes, and the socket count comes
    /// back to where it was.
    func testPortsAddedAndRemovedWhileRunning() throws {
        let tcp = try TestServer.echo()
        let publisher = self.publisher(threads: 2)
        let steady = try publisher.add(try loopbackMappings(["127.0.0.1::\(tcp.address.port)"]))
        let stop = try runInBackground(publisher)
        defer { stop() }
        let bystander = try TestSocket.connect(steady.ports[0].address)
        func ping(_ socket: TestSocket, _ text: String) throws {
            try socket.send(text)
            XCTAssertEqual(String(decoding: try socket.receive(exactly: text.utf8.count), as: UTF8.self), text)
        }
        try ping(bystander, "before")

        let added = try publisher.add(try loopbackMappings(["127.0.0.1::\(tcp.address.port)"]))
        let address = added.ports[0].address
        let open = try TestSocket.connect(address)
        try ping(open, "through an added port")
        try publisher.remove(added.id, drain: .milliseconds(500))
        // New clients are refused at once: the listener is closed (the loops were told; eventually).
        XCTAssertTrue(eventually { (try? TestSocket.connect(address, timeoutSeconds: 1)) == nil }, "still accepting")
        do { try ping(open, "still open while it drains") } catch { XCTFail("draining connection: \(error)") }
        XCTAssertEqual(open.receiveOutcome().errno, ECONNRESET, "reset when the drain time is up")
        XCTAssertThrowsError(try publisher.remove(added.id)) {
            XCTAssertEqual("\($0)", "no ports published as \(added.id)")
        }

        usleep(100_000)
        // Sockets: each loop's pool may keep a pipe more once a connection of its own used one.
        let before = openSocketCount()
        for i in 0..<200 {
            let more = try publisher.add(
                try loopbackMappings(["127.0.0.1::\(tcp.address.port)", "127.0.0.1::\(tcp.address.port)/udp"])
            )
            if i % 50 == 0 {
                let c = try TestSocket.connect(more.ports[0].address)
                try ping(c, "port \(i)")
            }
            try publisher.remove(more.id, drain: .zero)
            do { try ping(bystander, "still here \(i)") } catch { return XCTFail("bystander at \(i): \(error)") }
        }
        XCTAssertTrue(
            eventually { openSocketCount() <= before },
            "\(before) sockets before 200 adds and removes, \(openSocketCount()) after"
        )
        XCTAssertEqual(publisher.ports.map(\.address), steady.ports.map(\.address))
    }
}
