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
final class HandDrivenRelay {
    let loop: EventLoop
    let relay: UDPRelay
    let context: RelayContext
    let start: Instant

    init(target: SocketAddress, config: RelayConfig = RelayConfig()) throws {
        loop = try EventLoop()
        start = loop.now
        loop.frozenNow = start
        context = RelayContext(loop: loop, config: config)
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

    // MARK: the answered pool

    /// One-shot load (a new source port per query) leaves answered flows only, and berth keeps at
    /// most `udpMaxAnswered` of them, oldest closed first: the descriptors one-shot load holds are
    /// that, not the cap. A flow awaiting its answer, one answered twice for one request (a
    /// stream) and an assured one are never closed for the pool, and each still relays.
    func testAnsweredOneShotFlowsAreAPoolOfTheirOwnAndNothingElseIsClosedForIt() throws {
        let backend = try TestUDPSocket()
        var config = RelayConfig()
        config.udpMaxFlows = 16
        config.udpMaxAnswered = 2
        let relay = try HandDrivenRelay(target: backend.localAddress, config: config)
        var ongoing = try connect(relay)
        try exchange(&ongoing, "hello", relay, backend)
        try relay.at(2)
        try exchange(&ongoing, "more", relay, backend)
        XCTAssertEqual(relay.relay.counters.flowsAssured, 1)
        var waiting = try connect(relay)
        try up(&waiting, "slow query", relay, backend)
        var stream = try connect(relay)
        try up(&stream, "subscribe", relay, backend)
        try down(stream, "event 1", relay, backend)
        try down(stream, "event 2", relay, backend)
        var pair = try connect(relay)
        try up(&pair, "A?", relay, backend)
        try up(&pair, "AAAA?", relay, backend)
        try down(pair, "A", relay, backend)
        XCTAssertEqual(relay.relay.counters.answeredEvicted, 0, "one of two queries answered: still waiting")
        try down(pair, "AAAA", relay, backend)

        var oneShots: [Peer] = []
        for i in 0..<5 {
            var peer = try connect(relay)
            try exchange(&peer, "query \(i)", relay, backend)
            oneShots.append(peer)
        }
        // The pair, then one-shots 0, 1 and 2 closed as later ones were answered.
        XCTAssertEqual(relay.relay.counters.answeredEvicted, 4)
        XCTAssertEqual(relay.relay.counters.flowsEvicted, 0, "no flow evicted for the cap")
        XCTAssertEqual(relay.relay.flowCount, 5, "ongoing, waiting, stream and the two newest one-shots")
        XCTAssertEqual(relay.relay.counters.flowsActive, 5)
        XCTAssertNotNil(claimUDPPort("127.0.0.1", try XCTUnwrap(oneShots[0].flow).port), "its socket is closed")
        XCTAssertNil(claimUDPPort("127.0.0.1", try XCTUnwrap(oneShots[4].flow).port), "the newest is open")

        // The flows the pool left alone still relay on their own ports.
        try down(waiting, "slow answer", relay, backend)
        try down(stream, "event 3", relay, backend)
        try down(ongoing, "still here", relay, backend)
        try down(oneShots[4], "a late second answer", relay, backend)
        // A closed one-shot's client asking again gets a new flow, from a new port.
        let again = try up(&oneShots[0], "query 0 again", relay, backend)
        XCTAssertNotEqual(again.port, try XCTUnwrap(oneShots[4].flow).port)
        XCTAssertEqual(relay.relay.counters.flowsCreated, 10)
    }

    /// When the cap is reached, answered flows make room first, then flows awaiting a reply, and
    /// assured ones only when nothing else is left; `udpMaxAnswered` 0 closes a flow as soon as
    /// its exchange is over.
    func testTheCapEvictsAnsweredFlowsFirstAndZeroClosesEachOnceAnswered() throws {
        let backend = try TestUDPSocket()
        var config = RelayConfig()
        config.udpMaxFlows = 3
        config.udpMaxAnswered = 3
        let relay = try HandDrivenRelay(target: backend.localAddress, config: config)
        var waiting = try connect(relay)
        try up(&waiting, "slow query", relay, backend)
        var answered = try connect(relay)
        try exchange(&answered, "query", relay, backend)
        var newer = try connect(relay)
        try up(&newer, "another slow one", relay, backend)
        var fourth = try connect(relay)
        try up(&fourth, "one more", relay, backend)
        XCTAssertEqual(relay.relay.counters.flowsEvicted, 1)
        XCTAssertNotNil(
            claimUDPPort("127.0.0.1", try XCTUnwrap(answered.flow).port),
            "the answered flow made room, though the waiting ones are older"
        )
        try down(waiting, "slow answer", relay, backend)
        try down(newer, "answer", relay, backend)

        config.udpMaxAnswered = 0
        let closing = try HandDrivenRelay(target: backend.localAddress, config: config)
        var peer = try connect(closing)
        try exchange(&peer, "query", closing, backend)
        XCTAssertEqual(closing.relay.flowCount, 0, "closed once answered")
        XCTAssertEqual(closing.relay.counters.answeredEvicted, 1)
    }
}
