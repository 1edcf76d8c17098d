// Regression tests for the relay's correctness and fairness defects (issue 11): each failed
// on the relay before the fix.

import Glibc
import LinuxIO
import Relay
import Synchronization
import TestSupport
import XCTest

final class RelayCorrectnessTests: XCTestCase {
    private static let tries = 300

    /// A backend that reads 4 bytes, answers 3,000 and resets: the reply reaches the client
    /// whole, before the reset (directly: 300 of 300; the relay before the fix: 88 of 300).
    func testAReplySentJustBeforeTheBackendResetsIsNotLost() throws {
        let reply = pattern(3000, seed: 7)
        let server = try TestServer { socket in
            _ = try? socket.receive(exactly: 4)
            try? socket.send(reply)
            socket.reset()
        }
        let relay = try RelayHarness(target: server.address)
        var whole = 0
        var outcomes: [String: Int] = [:]
        for _ in 0..<Self.tries {
            let client = try TestSocket.connect(relay.address)
            try client.send("ping")
            var got: [UInt8] = []
            var end = "eof"
            while true {
                let outcome = client.receiveOutcome()
                if outcome.errno != 0 {
                    end = errnoText(outcome.errno)
                    break
                }
                if outcome.bytes.isEmpty { break }
                got += outcome.bytes
            }
            if got == reply { whole += 1 }
            outcomes["\(got.count) bytes, then \(end)", default: 0] += 1
        }
        XCTAssertEqual(whole, Self.tries, "whole replies; outcomes: \(outcomes)")
        // The reset still travels on, after the data.
        XCTAssertEqual(outcomes["3000 bytes, then \(errnoText(ECONNRESET))"], Self.tries, "\(outcomes)")
    }

    /// The same the other way: a client that sends, then resets.
    func testBytesAClientSendsJustBeforeItResetsReachTheBackend() throws {
        let request = pattern(3000, seed: 9)
        // Many server threads append at once (see Outcomes for the lock).
        let results = Outcomes()
        let server = try TestServer { socket in
            var got: [UInt8] = []
            var end = "eof"
            while true {
                let outcome = socket.receiveOutcome()
                if outcome.errno != 0 {
                    end = errnoText(outcome.errno)
                    break
                }
                if outcome.bytes.isEmpty { break }
                got += outcome.bytes
            }
            let text = got == request ? "whole, then \(end)" : "\(got.count) bytes, then \(end)"
            results.append(text)
        }
        let relay = try RelayHarness(target: server.address)
        for _ in 0..<Self.tries {
            let client = try TestSocket.connect(relay.address)
            try client.send(request)
            client.reset()
        }
        XCTAssertTrue(eventually { results.all.count == Self.tries })
        let tally = results.all.reduce(into: [String: Int]()) { $0[$1, default: 0] += 1 }
        XCTAssertEqual(tally["whole, then \(errnoText(ECONNRESET))"], Self.tries, "\(tally)")
    }

    /// One loop, one bulk stream: with a budget per wake-up it yields to the loop (and so to
    /// every other connection) many times instead of moving all it can in one go, and no byte
    /// is lost or reordered on the way. (The latency of a ping beside it is a benchmark figure.)
    func testABulkStreamYieldsAfterItsBudget() throws {
        let chunk = pattern(1 << 20, seed: 3)
        let chunks = 32
        var expected = StreamSum()
        for _ in 0..<chunks { expected.add(chunk) }
        // One backend for both: the first byte says bulk ("B") or ping-pong (anything else).
        let server = try TestServer { socket in
            guard let first = try? socket.receive(exactly: 1) else { return }
            if first == Array("B".utf8) {
                for _ in 0..<chunks { try? socket.send(chunk) }
            } else {
                try? socket.send(first)
                while let bytes = try? socket.receive(), !bytes.isEmpty { try? socket.send(bytes) }
            }
            socket.close()
        }
        var config = RelayConfig()
        config.pipeSize = 64 << 10
        let relay = try RelayHarness(target: server.address, config: config)
        // A ping-pong beside it on the same loop still gets through while the stream runs.
        let ping = try TestSocket.connect(relay.address)
        try ping.send("P")
        _ = try ping.receive(exactly: 1)
        let client = try TestSocket.connect(relay.address)
        try client.send("B")
        var got = StreamSum()
        var pings = 0
        while true {
            let bytes = try client.receive()
            if bytes.isEmpty { break }
            got.add(bytes)
            if pings < 20 {
                try ping.send([UInt8(pings)])
                XCTAssertEqual(try ping.receive(exactly: 1), [UInt8(pings)])
                pings += 1
            }
        }
        XCTAssertEqual(got.count, expected.count)
        XCTAssertEqual(got.value, expected.value, "bytes lost or reordered")
        let counters = relay.stop()
        // 32 MiB in budgets of 64 KiB: hundreds of turns, unless the reader kept up every time.
        XCTAssertGreaterThan(counters.yields, 0, "the bulk stream never yielded")
        print("bulk beside a ping: \(counters.yields) yields, \(counters.spliceCalls) splices")
    }

    /// Idle longer than the half-close timeout, then a graceful FIN: the connection goes on
    /// (the timeout counts from the FIN); before the fix it was reset at once.
    func testAFINAfterALongIdleSpellIsNotResetAtOnce() throws {
        let server = try TestServer { socket in
            _ = try? socket.receive(exactly: 5)
            try? socket.send("hello")
            _ = socket.receiveOutcome()  // the client's FIN, after its idle spell
            try? socket.send("the answer after your FIN")
            socket.close()
        }
        var config = RelayConfig()
        config.halfCloseTimeout = .seconds(1)
        let relay = try RelayHarness(target: server.address, config: config, frozenClock: true)
        let client = try TestSocket.connect(relay.address)
        try client.send("hello")
        XCTAssertEqual(try client.receive(exactly: 5), Array("hello".utf8))
        relay.advanceClock(by: .milliseconds(1500))  // longer than the half-close timeout, nothing moving
        client.shutdownWrite()
        var got: [UInt8] = []
        while true {
            let outcome = client.receiveOutcome()
            XCTAssertEqual(outcome.errno, 0, "reset after \(got.count) bytes")
            if outcome.errno != 0 || outcome.bytes.isEmpty { break }
            got += outcome.bytes
        }
        XCTAssertEqual(String(decoding: got, as: UTF8.self), "the answer after your FIN")
        XCTAssertEqual(relay.stop().halfCloseTimeouts, 0)
    }

    /// splice off: every stream takes the copy path (peek, send, consume), in both directions
    /// at once, without a pipe and without losing or reordering a byte.
    func testTheCopyPathWithoutPipesMovesBothDirectionsIntact() throws {
        let size = 8 << 20
        let up = pattern(size, seed: 11)
        let down = pattern(size, seed: 12)
        let received = Mutex<[UInt8]?>(nil)
        let server = try TestServer { socket in
            let sender = try? LoopThread(name: "down") {
                try? socket.send(down)
                socket.shutdownWrite()
            }
            let all = (try? socket.receiveAll()) ?? []
            sender?.join()
            received.withLock { $0 = all }
            socket.close()
        }
        var config = RelayConfig()
        config.splice = false
        let relay = try RelayHarness(target: server.address, config: config)
        let client = try TestSocket.connect(relay.address)
        let sender = try LoopThread(name: "up") {
            try? client.send(up)
            client.shutdownWrite()
        }
        let got = try client.receiveAll()
        sender.join()
        XCTAssertTrue(got == down, "backend → client: \(got.count) of \(size) bytes, or reordered")
        XCTAssertTrue(eventually { received.withLock { $0 != nil } })
        XCTAssertTrue(received.withLock { $0 == up }, "client → backend bytes differ")
        let counters = relay.stop()
        XCTAssertEqual(counters.spliceCalls, 0)
        XCTAssertEqual(counters.bytesToBackend, UInt64(size))
        XCTAssertEqual(counters.bytesToClient, UInt64(size))
    }

    /// A stopped loop closes all it owns: listener, open connections, pipes, epoll, eventfd.
    /// The port binds again, and the process has the descriptors it had before.
    func testAStoppedRelayClosesEverythingItOwned() throws {
        let server = try TestServer.echo()
        let before = openDescriptorCount()
        var relay: RelayHarness? = try RelayHarness(target: server.address)
        let address = try XCTUnwrap(relay?.address)
        let client = try TestSocket.connect(address)
        try client.send("still open when the relay stops")
        _ = try client.receive(exactly: 31)
        relay?.stop()
        relay = nil
        // The open connection was reset, not left hanging.
        XCTAssertEqual(client.receiveOutcome().errno, ECONNRESET)
        client.close()
        XCTAssertTrue(
            eventually { openDescriptorCount() <= before + 1 },
            "\(before) before, \(openDescriptorCount()) after"
        )
        // The echo server's side of the connection may still be closing: the +1 above. The port is free.
        XCTAssertNoThrow(try Listener.tcp(address))
    }
}

/// What the server threads of a test saw, in the order they said it. A pthread mutex, which
/// ThreadSanitizer understands (it does not see Synchronization.Mutex's futex as a lock).
final class Outcomes: @unchecked Sendable {
    private var list: [String] = []
    private var mutex = pthread_mutex_t()
    init() { pthread_mutex_init(&mutex, nil) }
    deinit { pthread_mutex_destroy(&mutex) }
    func append(_ text: String) {
        pthread_mutex_lock(&mutex)
        list.append(text)
        pthread_mutex_unlock(&mutex)
    }
    var all: [String] {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        return list
    }
}
