// UDP flow lifetimes as conntrack's: a flow that saw no reply, or one exchange, goes after the
// short (unreplied) timeout; one with traffic both ways past that (assured) keeps the long one.
// The loop is driven by hand on the test's thread with its clock frozen, so a two-minute
// timeout is tested without waiting for it.

import Glibc
import LinuxIO
import Relay
import TestSupport
import XCTest

/// A UDP relay on 127.0.0.1 whose loop the test turns by hand, its clock set by the test.
private final class HandDrivenRelay {
    let loop: EventLoop
    let relay: UDPRelay
    let start: Instant

    init(target: SocketAddress, config: RelayConfig = RelayConfig()) throws {
        loop = try EventLoop()
        start = loop.now
        loop.frozenNow = start
        let context = RelayContext(loop: loop, config: config)
        relay = UDPRelay(
            listener: try Listener.udp(SocketAddress(ip: "127.0.0.1", port: 0)!),
            target: target,
            context: context
        )
        try relay.start()
    }

    var address: SocketAddress { relay.listener.address }

    /// Moves the clock to `seconds` after the start and serves what is ready (timers due included).
    func at(_ seconds: Double) throws {
        loop.frozenNow = start + .milliseconds(Int64(seconds * 1000))
        try loop.runOnce(timeoutMilliseconds: 0)
    }

    /// Serves one datagram known to be on its way (sent over loopback: already queued).
    func serve() throws { try loop.runOnce(timeoutMilliseconds: 1000) }

    deinit { loop.closeAll() }
}

final class UDPLifetimeTests: XCTestCase {
    /// A client connected to the relay, and the backend that answers it.
    private struct Peer {
        let client: TestUDPSocket
        var flow: SocketAddress?
    }

    private func connect(_ relay: HandDrivenRelay) throws -> Peer {
        let client = try TestUDPSocket()
        try client.connect(relay.address)
        return Peer(client: client)
    }

    /// Client → relay → backend; returns the flow's address as the backend sees it.
    @discardableResult
    private func up(
        _ peer: inout Peer,
        _ text: String,
        _ relay: HandDrivenRelay,
        _ backend: TestUDPSocket
    ) throws
        -> SocketAddress
    {
        try peer.client.send(text)
        try relay.serve()
        let (bytes, from) = try backend.receiveFrom()
        XCTAssertEqual(String(decoding: bytes, as: UTF8.self), text)
        peer.flow = from
        return from
    }

    /// Backend → relay → client, on the peer's flow.
    private func down(_ peer: Peer, _ text: String, _ relay: HandDrivenRelay, _ backend: TestUDPSocket) throws {
        try backend.send(Array(text.utf8), to: try XCTUnwrap(peer.flow))
        try relay.serve()
        XCTAssertEqual(String(decoding: try peer.client.receive(), as: UTF8.self), text)
    }

    /// A request and its answer.
    private func exchange(
        _ peer: inout Peer,
        _ text: String,
        _ relay: HandDrivenRelay,
        _ backend: TestUDPSocket
    )
        throws
    {
        try up(&peer, text, relay, backend)
        try down(peer, "re: \(text)", relay, backend)
    }

    private func relay(timeout: Duration, unreplied: Duration, to backend: TestUDPSocket) throws -> HandDrivenRelay {
        var config = RelayConfig()
        config.udpTimeout = timeout
        config.udpTimeoutUnreplied = unreplied
        return try HandDrivenRelay(target: backend.localAddress, config: config)
    }

    /// The defaults: a one-shot query (one exchange), a resolver's A and AAAA pair (two queries,
    /// two replies at once) and a one-way stream go 30 s after their last datagram; a flow that
    /// goes on both ways past 2 s lives until it has been idle 120 s.
    func testAOneShotFlowExpiresAfterThirtySecondsAndAnOngoingOneLivesToTwoMinutes() throws {
        let backend = try TestUDPSocket()
        let relay = try HandDrivenRelay(target: backend.localAddress)
        var oneShot = try connect(relay)
        var pair = try connect(relay)
        var oneWay = try connect(relay)
        var ongoing = try connect(relay)

        try up(&oneShot, "query", relay, backend)
        try down(oneShot, "answer", relay, backend)
        try up(&pair, "A?", relay, backend)
        try up(&pair, "AAAA?", relay, backend)
        try down(pair, "A", relay, backend)
        try down(pair, "AAAA", relay, backend)
        try up(&oneWay, "tick 0", relay, backend)
        try up(&ongoing, "hello", relay, backend)
        try down(ongoing, "hello yourself", relay, backend)
        XCTAssertEqual(relay.relay.flowCount, 4)

        try relay.at(3)
        try up(&ongoing, "still there?", relay, backend)
        try down(ongoing, "yes", relay, backend)
        try up(&oneWay, "tick 3", relay, backend)

        try relay.at(29.9)
        XCTAssertEqual(relay.relay.flowCount, 4, "nothing idle 30 s yet")
        try relay.at(30.1)
        XCTAssertEqual(relay.relay.flowCount, 2, "the one-shot query and the A/AAAA pair are gone after 30 s")
        XCTAssertEqual(relay.relay.counters.flowsExpired, 2)
        try relay.at(33.1)
        XCTAssertEqual(relay.relay.flowCount, 1, "the one-way stream, 30 s after its last datagram")

        try relay.at(122.9)
        XCTAssertEqual(relay.relay.flowCount, 1, "the ongoing flow lives past 30 s and 90 s of idle")
        try relay.at(123.1)
        XCTAssertEqual(relay.relay.flowCount, 0, "and goes after 120 s idle")
        XCTAssertEqual(relay.relay.counters.flowsExpired, 4)
        XCTAssertEqual(relay.relay.counters.flowsCreated, 4)
    }

    /// Both timeouts are settable; the unreplied one never outlasts the other, so `udpTimeout`
    /// alone (berth's only UDP timeout before) still bounds every flow.
    func testBothTimeoutsAreSettableAndTheShortOneNeverOutlastsTheLongOne() throws {
        let backend = try TestUDPSocket()
        let relay = try relay(timeout: .seconds(10), unreplied: .seconds(4), to: backend)
        var oneShot = try connect(relay)
        var ongoing = try connect(relay)
        try exchange(&oneShot, "query", relay, backend)
        try exchange(&ongoing, "hello", relay, backend)
        try relay.at(2)
        try up(&ongoing, "more", relay, backend)
        XCTAssertEqual(relay.relay.counters.flowsAssured, 1)
        try relay.at(3.9)
        XCTAssertEqual(relay.relay.flowCount, 2)
        try relay.at(4.1)
        XCTAssertEqual(relay.relay.flowCount, 1, "the one-shot flow after 4 s")
        try relay.at(11.9)
        XCTAssertEqual(relay.relay.flowCount, 1)
        try relay.at(12.1)
        XCTAssertEqual(relay.relay.flowCount, 0, "the assured one 10 s after its last datagram")

        var short = RelayConfig()
        short.udpTimeout = .seconds(5)
        let capped = try HandDrivenRelay(target: backend.localAddress, config: short)
        var peer = try connect(capped)
        try up(&peer, "query", capped, backend)
        try capped.at(4.9)
        XCTAssertEqual(capped.relay.flowCount, 1)
        try capped.at(5.1)
        XCTAssertEqual(capped.relay.flowCount, 0, "udpTimeout 5 s alone: unreplied flows go after 5 s, not 30")
    }

    /// One timer per lifetime, never one left behind: an assured flow waiting out a long timeout
    /// beside 200 one-shot flows that come and go one after another leaves the loop's timer heap
    /// as small as it started (a single timer for both lifetimes left one entry per refill).
    func testShortFlowsComingAndGoingBesideALongOneLeaveNoTimersBehind() throws {
        let backend = try TestUDPSocket()
        let relay = try relay(timeout: .seconds(1_000_000), unreplied: .seconds(1), to: backend)
        var ongoing = try connect(relay)
        try exchange(&ongoing, "hello", relay, backend)
        for t in [0.9, 1.8, 2.1] {
            try relay.at(t)
            try up(&ongoing, "more at \(t)", relay, backend)
        }
        XCTAssertEqual(relay.relay.counters.flowsAssured, 1)
        var t = 2.1
        for i in 0..<200 {
            var oneShot = try connect(relay)
            try up(&oneShot, "query \(i)", relay, backend)
            t += 1.5
            try relay.at(t)
            XCTAssertEqual(relay.relay.flowCount, 1)
        }
        XCTAssertEqual(relay.relay.counters.flowsExpired, 200)
        XCTAssertLessThanOrEqual(relay.loop.pendingTimers, 2, "one per lifetime at most")
    }
}
