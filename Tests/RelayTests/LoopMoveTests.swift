// Connections handed between loops (RelayConfig.bulkAfter): a bulk connection moves from the loop
// that accepted it to a bulk loop and back when quiet, losing and reordering nothing. The
// threshold is set so that a move happens at a known point: `bulkAfter: 1` moves a connection
// right after the first turn that delivered a byte. Most tests turn both loops by hand on the
// test's thread (a connection in transit is a message in the bulk loop's inbox until that loop
// turns); the large transfer runs them on threads of their own, as berth does.

import Glibc
import LinuxIO
import Relay
import TestSupport
import XCTest

/// A home loop with an acceptor, and its bulk loop.
private final class TwoLoops {
    let home: EventLoop
    let bulk: EventLoop
    let homeContext: RelayContext
    let bulkContext: RelayContext
    let acceptor: TCPAcceptor
    private var threads: [LoopThread] = []

    init(target: SocketAddress, config: RelayConfig) throws {
        home = try EventLoop()
        bulk = try EventLoop()
        homeContext = RelayContext(loop: home, config: config)
        bulkContext = RelayContext(loop: bulk, config: config, bulk: true)
        homeContext.bulkLoops = [bulkContext]
        acceptor = TCPAcceptor(
            listener: try Listener.tcp(SocketAddress(ip: "127.0.0.1", port: 0)!),
            target: target,
            context: homeContext
        )
        try acceptor.start()
    }

    var address: SocketAddress { acceptor.listener.address }

    /// Both loops' clocks, frozen at `at(0)` and moved on together by the test.
    private lazy var start = home.now
    func at(_ seconds: Int64) {
        home.frozenNow = start + .seconds(seconds)
        bulk.frozenNow = start + .seconds(seconds)
    }

    /// One turn of each loop, none waiting long.
    func turn() throws {
        try home.runOnce(timeoutMilliseconds: 1)
        try bulk.runOnce(timeoutMilliseconds: 1)
    }

    /// Turns the home loop alone until `condition` holds (bounded: a broken relay fails, never hangs).
    func turnHome(until condition: () -> Bool) throws {
        for _ in 0..<5000 where !condition() { try home.runOnce(timeoutMilliseconds: 1) }
        guard condition() else { throw TestFailure("the home loop never got there") }
    }

    /// Both loops on threads of their own, as berth runs them.
    func startThreads() throws {
        for loop in [home, bulk] {
            let handover = Handover(loop)
            threads.append(try LoopThread(name: "move-test") { try? handover.value.run() })
        }
    }

    func stopThreads() {
        home.waker.stop()
        bulk.waker.stop()
        for t in threads { t.join() }
        threads = []
    }

    deinit {
        stopThreads()
        home.closeAll()
        bulk.closeAll()
    }
}

/// A backend the test accepts from and reads without blocking; `receiveBuffer` set on the
/// listener (accepted sockets inherit it) keeps what it takes small.
private final class Backend {
    let fd: Int32
    let address: SocketAddress

    init(receiveBuffer: Int32? = nil) throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        self.fd = fd
        if var size = receiveBuffer { setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, 4) }
        let any = SocketAddress(ip: "127.0.0.1", port: 0)!
        guard any.withSockAddr({ bind(fd, $0, $1) }) == 0, listen(fd, 16) == 0 else {
            let text = errnoText()
            close(fd)
            throw TestFailure("backend: \(text)")
        }
        address = try Socket.localAddress(fd)
        _ = fcntl(fd, F_SETFL, O_NONBLOCK)
    }

    /// The relay's connection (its handshake is done by the time the relay connected).
    func accept(turning loops: TwoLoops) throws -> TestSocket {
        for _ in 0..<5000 {
            let c = Glibc.accept(fd, nil, nil)
            if c >= 0 { return TestSocket(fd: c) }
            try loops.turn()
        }
        throw TestFailure("the relay never connected")
    }

    deinit { close(fd) }
}

/// Sends without blocking; returns how much the socket took.
private func sendSome(_ s: TestSocket, _ bytes: ArraySlice<UInt8>) -> Int {
    let n = bytes.withUnsafeBytes { send(s.fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT | MSG_NOSIGNAL)) }
    return max(n, 0)
}

/// What a socket read without blocking: bytes so far, then end of file or an errno.
private struct Received {
    var bytes: [UInt8] = []
    var eof = false
    var errno: Int32 = 0
    var done: Bool { eof || errno != 0 }
}

private func receiveSome(_ s: TestSocket, into r: inout Received) {
    var buffer = [UInt8](repeating: 0, count: 1 << 16)
    while !r.done {
        let n = buffer.withUnsafeMutableBytes { recv(s.fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
        if n > 0 {
            r.bytes += buffer[0..<n]
        } else if n == 0 {
            r.eof = true
        } else {
            if Glibc.errno != EAGAIN && Glibc.errno != EINTR { r.errno = Glibc.errno }
            return
        }
    }
}

/// Turns both loops, reading `s`, until `enough` says so.
private func receive(
    _ s: TestSocket,
    turning loops: TwoLoops,
    until enough: (Received) -> Bool
) throws -> Received {
    var r = Received()
    for _ in 0..<20000 {
        receiveSome(s, into: &r)
        if enough(r) { return r }
        try loops.turn()
    }
    throw TestFailure("received \(r.bytes.count) bytes, eof \(r.eof), errno \(r.errno), and no more")
}

final class LoopMoveTests: XCTestCase {
    private func config(bulkAfter: Int = 1, window: Duration = .seconds(3600)) -> RelayConfig {
        var config = RelayConfig()
        config.bulkAfter = bulkAfter
        config.bulkWindow = window
        return config
    }

    /// A connection whose client sent `first`, relayed by the home loop, which then handed it
    /// over: in transit, a message the bulk loop has not taken (it has not turned since).
    private func inTransit(after first: String) throws -> (Backend, TwoLoops, TestSocket, TestSocket) {
        let backend = try Backend()
        let loops = try TwoLoops(target: backend.address, config: config())
        let client = try TestSocket.connect(loops.address)
        try client.send(first)
        let server = try backend.accept(turning: loops)
        try loops.turnHome { loops.homeContext.counters.moves == 1 }
        return (backend, loops, client, server)
    }

    /// 8 MiB each way at once through a connection that keeps moving between the loops (a
    /// 1 ms window: it goes home whenever a millisecond passes with less than 64 KiB), both loops
    /// on their own threads; every byte in order, and the descriptors back at their baseline.
    func testBytesCrossMovesIntactBothWaysAndNothingIsLeftOpen() throws {
        let baseline = openDescriptors()
        do {
            let backend = try TestServer.echo()
            defer { backend.stop() }
            let loops = try TwoLoops(
                target: backend.address,
                config: config(bulkAfter: 64 << 10, window: .milliseconds(1))
            )
            try loops.startThreads()
            let client = try TestSocket.connect(loops.address)
            let size = 8 << 20
            let data = pattern(size, seed: 22)
            var sent = StreamSum()
            sent.add(data)
            let reader = ReaderBox(client, count: size)
            let thread = try LoopThread(name: "move-reader") { reader.run() }
            try client.send(data)
            client.shutdownWrite()
            thread.join()
            XCTAssertEqual(reader.sum.count, size)
            XCTAssertEqual(reader.sum.value, sent.value, "every byte back, in order")
            XCTAssertTrue(reader.eof, "the half-close came back after the bytes")
            loops.stopThreads()
            XCTAssertGreaterThanOrEqual(loops.homeContext.counters.moves, 1, "moved to the bulk loop")
            XCTAssertEqual(
                loops.homeContext.counters.bytesToBackend + loops.bulkContext.counters.bytesToBackend,
                UInt64(size)
            )
            XCTAssertEqual(
                loops.homeContext.counters.closed + loops.bulkContext.counters.closed,
                1,
                "closed once, wherever it was"
            )
        }
        XCTAssertEqual(descriptorsLeftOpen(since: baseline), [], "sockets and pipes all closed")
    }

    /// The client half-closes before the connection's first turn: its FIN goes out with its bytes,
    /// then the connection moves half-closed, and the backend's answer and FIN come back from the
    /// bulk loop.
    func testAHalfCloseBeforeAMove() throws {
        let backend = try Backend()
        let loops = try TwoLoops(target: backend.address, config: config())
        let client = try TestSocket.connect(loops.address)
        try client.send("question")
        client.shutdownWrite()
        let server = try backend.accept(turning: loops)
        let asked = try receive(server, turning: loops) { $0.eof }
        XCTAssertEqual(asked.bytes, Array("question".utf8))
        XCTAssertEqual(loops.homeContext.counters.moves, 1)
        try server.send("answer")
        server.shutdownWrite()
        let answered = try receive(client, turning: loops) { $0.eof }
        XCTAssertEqual(answered.bytes, Array("answer".utf8))
        try loops.turn()
        XCTAssertEqual(loops.bulkContext.counters.closed, 1, "closed on the bulk loop, with a FIN")
        XCTAssertEqual(loops.bulkContext.counters.resets, 0)
    }

    /// Bytes and the client's FIN that arrive while the connection travels (a message not yet
    /// taken by the bulk loop) reach the backend after what went before.
    func testAHalfCloseDuringAMove() throws {
        let (backend, loops, client, server) = try inTransit(after: "first ")
        try client.send("second")
        client.shutdownWrite()
        let got = try receive(server, turning: loops) { $0.eof }
        XCTAssertEqual(got.bytes, Array("first second".utf8))
        try server.send("bye")
        server.close()
        let back = try receive(client, turning: loops) { $0.eof }
        XCTAssertEqual(back.bytes, Array("bye".utf8))
        withExtendedLifetime(backend) {}
    }

    /// The client sends, then resets, while its connection travels: the backend reads every byte,
    /// then the reset.
    func testAResetDuringAMoveArrivesAfterTheDataBeforeIt() throws {
        let (backend, loops, client, server) = try inTransit(after: "before the move ")
        try client.send("and during it")
        client.reset()
        let got = try receive(server, turning: loops) { $0.done }
        XCTAssertEqual(String(decoding: got.bytes, as: UTF8.self), "before the move and during it")
        XCTAssertEqual(got.errno, ECONNRESET, "then the reset")
        XCTAssertFalse(got.eof)
        try loops.turn()
        XCTAssertEqual(loops.bulkContext.counters.resets, 1)
        withExtendedLifetime(backend) {}
    }

    /// Small messages copy (recv, send) and take no pipe while the target takes them whole; one
    /// it takes only part of leaves the rest in a pipe taken from the pool's idle ones then, not
    /// a new one, and every byte still reaches the backend once, in order. No move (the
    /// threshold is out of reach).
    func testWhatASmallSendLeavesWaitsInAPipeFromThePool() throws {
        let backend = try Backend(receiveBuffer: 4096)
        let loops = try TwoLoops(target: backend.address, config: config(bulkAfter: 1 << 40))
        let client = try TestSocket.connect(loops.address)
        try client.send("hello")
        let server = try backend.accept(turning: loops)
        let hello = try receive(server, turning: loops) { $0.bytes.count == 5 }
        XCTAssertEqual(hello.bytes, Array("hello".utf8))
        XCTAssertEqual(loops.homeContext.pipesCreated, 1, "the first message found the pool empty")
        XCTAssertEqual(loops.homeContext.idlePipes, 1, "and gave the pipe back")
        // The backend reads nothing now: 8 KB messages, one a turn, until a send is partial.
        let data = pattern(64 << 20, seed: 5)
        var offset = 0
        for _ in 0..<(data.count / 8192) where loops.homeContext.counters.copyStashes == 0 {
            offset += sendSome(client, data[offset..<(offset + 8192)])
            try loops.home.runOnce(timeoutMilliseconds: 0)
        }
        XCTAssertEqual(loops.homeContext.counters.copyStashes, 1, "a send was partial")
        XCTAssertEqual(loops.homeContext.pipesCreated, 1, "the rest went into the idle pipe")
        XCTAssertEqual(loops.homeContext.idlePipes, 0, "which the stream holds now")
        client.shutdownWrite()
        var expected = StreamSum()
        expected.add(Array("hello".utf8))
        expected.add(Array(data[0..<offset]))
        var sum = StreamSum()
        sum.add(hello.bytes)
        var r = Received()
        for _ in 0..<400_000 where !r.done {
            receiveSome(server, into: &r)
            sum.add(r.bytes)
            r.bytes.removeAll(keepingCapacity: true)
            try loops.turn()
        }
        XCTAssertTrue(r.eof, "the client's FIN came after its bytes")
        XCTAssertEqual(sum.count, expected.count)
        XCTAssertEqual(sum.value, expected.value, "in order and intact")
        XCTAssertEqual(loops.homeContext.counters.bytesToBackend, UInt64(expected.count))
        withExtendedLifetime(backend) {}
    }

    /// The connection first stalls on its home loop, moving nothing (the bulk loop is not offered
    /// yet), with its pipe full: the backend reads nothing. Then the backend sends a byte, the turn
    /// that relays it moves the connection, and the client's pipe goes along holding what the
    /// backend has not taken yet. The backend then reads the whole stream in order from the bulk
    /// loop, where the emptied pipe joins the pool and is used again.
    func testAMoveWithBytesInThePipe() throws {
        let backend = try Backend(receiveBuffer: 4096)
        let loops = try TwoLoops(target: backend.address, config: config())
        loops.homeContext.bulkLoops = []
        let client = try TestSocket.connect(loops.address)
        let size = 16 << 20
        let data = pattern(size, seed: 7)
        var offset = sendSome(client, data[...])
        let server = try backend.accept(turning: loops)
        var idle = 0
        while idle < 20 && offset < size {
            let n = sendSome(client, data[offset...])
            offset += n
            idle = n == 0 ? idle + 1 : 0
            try loops.home.runOnce(timeoutMilliseconds: 1)
        }
        XCTAssertEqual(loops.homeContext.pipesCreated, 1)
        XCTAssertEqual(loops.homeContext.idlePipes, 0, "stalled with bytes in its pipe")
        loops.homeContext.bulkLoops = [loops.bulkContext]
        try server.send("x")
        try loops.turnHome { loops.homeContext.counters.moves == 1 }
        // The byte's stream took a second pipe and gave it back; the full one went along.
        XCTAssertEqual(loops.homeContext.pipesCreated, 2)
        XCTAssertEqual(loops.homeContext.idlePipes, 1, "the full pipe went with its bytes")
        let reply = try receive(client, turning: loops) { $0.bytes.count == 1 }
        XCTAssertEqual(reply.bytes, Array("x".utf8))
        var sum = StreamSum()
        var r = Received()
        for _ in 0..<400_000 where sum.count < size {
            if offset < size { offset += sendSome(client, data[offset...]) }
            receiveSome(server, into: &r)
            sum.add(r.bytes)
            r.bytes.removeAll(keepingCapacity: true)
            try loops.turn()
        }
        var expected = StreamSum()
        expected.add(data)
        XCTAssertEqual(sum.count, size)
        XCTAssertEqual(sum.value, expected.value, "in order and intact")
        XCTAssertGreaterThan(loops.bulkContext.counters.bytesToBackend, 0, "the rest went from the bulk loop")
        XCTAssertEqual(loops.bulkContext.idlePipes, 1, "the emptied pipe went to the bulk loop's pool")
        XCTAssertEqual(loops.bulkContext.pipesCreated, 0, "and was used again there: the bulk loop made none")
    }

    /// With the clocks frozen: bulk at its first two bytes, home again after a quiet window, and the
    /// mapping's counters, summed over both loops, count each byte and move once.
    func testAQuietConnectionGoesHomeAndTheCountersAddUp() throws {
        let (backend, loops, client, server) = try onTheBulkLoop(
            after: "ab",
            config: config(bulkAfter: 2, window: .seconds(1))
        )
        var moved = loops.bulkContext.movedInCounters()
        XCTAssertEqual(moved.count, 1)
        XCTAssertEqual(moved.first?.countersID, loops.acceptor.countersID)
        XCTAssertEqual(moved.first?.counters.bulk, 1)
        XCTAssertEqual(moved.first?.counters.active, 1)
        XCTAssertEqual(loops.acceptor.counters.active, 0, "counted on the bulk loop now")
        // Three seconds with nothing: the next byte finds it quiet, and it goes home.
        loops.at(3)
        try server.send("b")
        _ = try receive(client, turning: loops) { $0.bytes.count == 1 }
        try loops.turn()
        XCTAssertEqual(loops.bulkContext.counters.moves, 1, "home again")
        moved = loops.bulkContext.movedInCounters()
        XCTAssertEqual(moved.first?.counters.bulk, 0)
        XCTAssertEqual(moved.first?.counters.active, 0)
        XCTAssertEqual(loops.acceptor.counters.active, 1)
        let total = loops.acceptor.counters + (moved.first?.counters ?? MappingCounters())
        XCTAssertEqual(total.bytesToBackend, 2)
        XCTAssertEqual(total.bytesToClient, 1)
        XCTAssertEqual(total.moves, 2)
        XCTAssertEqual(total.accepted, 1)
        XCTAssertEqual(total.active, 1)
        withExtendedLifetime(backend) {}
    }

    /// The loops stop while a connection travels between them (a message the bulk loop never
    /// took): it is reset, its sockets and pipes close, and the descriptors are back at their
    /// baseline (the message held the loop's context, and through it the loop's own inbox).
    func testAConnectionInTransitWhenTheLoopsStopIsResetAndClosed() throws {
        let baseline = openDescriptors()
        let backend = try Backend(receiveBuffer: 4096)
        var loops: TwoLoops? = try TwoLoops(target: backend.address, config: config())
        let client = try TestSocket.connect(try XCTUnwrap(loops?.address))
        _ = sendSome(client, pattern(1 << 20, seed: 3)[...])
        let server = try backend.accept(turning: try XCTUnwrap(loops))
        try loops?.turnHome { loops?.homeContext.counters.moves == 1 }
        loops = nil
        var r = Received()
        for _ in 0..<1000 where !r.done {
            receiveSome(client, into: &r)
            usleep(1000)
        }
        XCTAssertEqual(r.errno, ECONNRESET, "reset, not passed off as a clean end")
        client.close()
        server.close()
        withExtendedLifetime(backend) {}
        let left = descriptorsLeftOpen(since: baseline)
        XCTAssertEqual(left.count, 1, "only the backend's listener is left: \(left)")
        XCTAssertTrue(left.allSatisfy { $0.contains("socket:") }, "\(left)")
    }

    /// The port is removed while its connection is on the bulk loop: the connection drains there
    /// (bytes still move) and is reset when the drain time is up, as on its home loop.
    func testRemovingThePortDrainsAMovedConnection() throws {
        let (backend, loops, client, server) = try onTheBulkLoop(after: "x", config: config())
        loops.acceptor.stop(drain: .seconds(10))
        try loops.turn()
        try server.send("still draining")
        let during = try receive(client, turning: loops) { $0.bytes.count == 14 }
        XCTAssertEqual(during.bytes, Array("still draining".utf8))
        loops.at(11)
        let after = try receive(client, turning: loops) { $0.done }
        XCTAssertEqual(after.errno, ECONNRESET, "reset when the drain time was up")
        XCTAssertEqual(loops.bulkContext.counters.drainResets, 1)
        withExtendedLifetime(backend) {}
    }

    /// With both clocks frozen: a connection whose client sent `first`, which the backend has read,
    /// and which moved to the bulk loop after relaying it.
    private func onTheBulkLoop(
        after first: String,
        config: RelayConfig
    ) throws -> (Backend, TwoLoops, TestSocket, TestSocket) {
        let backend = try Backend()
        let loops = try TwoLoops(target: backend.address, config: config)
        loops.at(0)
        let client = try TestSocket.connect(loops.address)
        try client.send(first)
        let server = try backend.accept(turning: loops)
        _ = try receive(server, turning: loops) { $0.bytes.count == first.utf8.count }
        XCTAssertEqual(loops.homeContext.counters.moves, 1)
        return (backend, loops, client, server)
    }
}

/// Reads a stream to its end on another thread, summing it.
private final class ReaderBox: @unchecked Sendable {
    let socket: TestSocket
    let count: Int
    var sum = StreamSum()
    var eof = false

    init(_ socket: TestSocket, count: Int) {
        self.socket = socket
        self.count = count
    }

    func run() {
        while let chunk = try? socket.receive(), !chunk.isEmpty { sum.add(chunk) }
        eof = sum.count == count
    }
}
