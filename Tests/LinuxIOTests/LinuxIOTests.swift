import Glibc
import LinuxIO
import Synchronization
import TestSupport
import XCTest

/// Records what the loop delivered.
private final class Recorder: EventHandler {
    var events: [(UInt8, Readiness)] = []
    var timers: [UInt8] = []
    var onReady: ((Recorder) -> Void)?
    func ready(_ readiness: Readiness, tag: UInt8, loop: EventLoop) {
        events.append((tag, readiness))
        onReady?(self)
    }
    func timer(tag: UInt8, loop: EventLoop) { timers.append(tag) }
}

final class LinuxIOTests: XCTestCase {
    func testErrorNamesTheCallTheAddressAndErrno() throws {
        let first = try Socket.make(family: AF_INET, type: Int32(SOCK_STREAM.rawValue))
        try Socket.bind(first.raw, SocketAddress(ip: "127.0.0.1", port: 0)!)
        try Socket.listen(first.raw, backlog: 1)
        let port = try Socket.localAddress(first.raw).port
        let second = try Socket.make(family: AF_INET, type: Int32(SOCK_STREAM.rawValue))
        XCTAssertThrowsError(try Socket.bind(second.raw, SocketAddress(ip: "127.0.0.1", port: port)!)) { error in
            XCTAssertEqual("\(error)", "bind 127.0.0.1:\(port): address already in use")
        }
    }

    func testDescriptorClosesWhenDropped() throws {
        let before = openDescriptorCount()
        do {
            let pipe = try Pipe(size: 65536)
            XCTAssertEqual(openDescriptorCount(), before + 2)
            XCTAssertGreaterThanOrEqual(pipe.capacity, 65536)
        }
        XCTAssertEqual(openDescriptorCount(), before)
        let raw: Int32
        do {
            let d = Descriptor(taking: dup(0))
            raw = d.release()
        }
        XCTAssertEqual(openDescriptorCount(), before + 1, "a released descriptor stays open")
        close(raw)
    }

    func testAPipeSizeTheKernelRefusesKeepsItsDefaultAndDoesNotTrap() throws {
        // Past Int32 (and past what F_SETPIPE_SZ rounds): refused, so the default 64 KiB stays.
        let pipe = try Pipe(size: 3_000_000_000)
        XCTAssertEqual(pipe.capacity, 65536)
    }

    func testSocketAddressText() {
        XCTAssertEqual(SocketAddress(ip: "127.0.0.1", port: 80)!.description, "127.0.0.1:80")
        XCTAssertEqual(SocketAddress(ip: "::1", port: 8080)!.description, "[::1]:8080")
        XCTAssertEqual(SocketAddress(ip: "0.0.0.0", port: 0)!.port, 0)
        XCTAssertNil(SocketAddress(ip: "300.1.1.1", port: 1))
        XCTAssertEqual(SocketAddress(ip: [198, 18, 0, 2], port: 53).description, "198.18.0.2:53")
    }

    func testTimersFireInDeadlineOrder() throws {
        let loop = try EventLoop()
        let recorder = Recorder()
        let id = loop.attach(recorder)
        let now = Instant.now()
        loop.schedule(at: now + .milliseconds(30), for: id, tag: 3)
        loop.schedule(at: now + .milliseconds(10), for: id, tag: 1)
        loop.schedule(at: now + .milliseconds(20), for: id, tag: 2)
        while recorder.timers.count < 3 { try loop.runOnce(timeoutMilliseconds: 1000) }
        XCTAssertEqual(recorder.timers, [1, 2, 3])
        XCTAssertEqual(loop.pendingTimers, 0)
    }

    func testDeadlineTooFarAwaySaturatesInsteadOfWrapping() {
        let now = Instant.now()
        XCTAssertEqual((now + .seconds(Int64.max)).nanoseconds, UInt64.max)
        XCTAssertEqual((Instant(nanoseconds: UInt64.max - 5) + .nanoseconds(10)).nanoseconds, UInt64.max)
        XCTAssertEqual((now + .seconds(1)).nanoseconds, now.nanoseconds + 1_000_000_000)
    }

    func testBusyPollingLoopStillDeliversEventsAndTimers() throws {
        let loop = try EventLoop()
        loop.busyPoll = 2_000_000
        let recorder = Recorder()
        let id = loop.attach(recorder)
        var fds: [Int32] = [0, 0]
        XCTAssertEqual(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds), 0)
        defer {
            close(fds[0])
            close(fds[1])
        }
        try loop.add(fds[0], .read, for: id, tag: 4)
        loop.schedule(at: .now() + .milliseconds(20), for: id, tag: 1)
        _ = write(fds[1], "x", 1)
        while recorder.timers.isEmpty { try loop.runOnce(timeoutMilliseconds: 1000) }
        XCTAssertEqual(recorder.events.first?.0, 4)
        XCTAssertEqual(recorder.timers, [1])
    }

    func testDetachedHandlerGetsNoEventsOrTimers() throws {
        let loop = try EventLoop()
        let first = Recorder()
        let second = Recorder()
        var fds: [Int32] = [0, 0]
        XCTAssertEqual(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds), 0)
        defer {
            close(fds[0])
            close(fds[1])
        }
        let a = loop.attach(first)
        let b = loop.attach(second)
        try loop.add(fds[0], .read, for: a, tag: 7)
        try loop.add(fds[1], .read, for: b, tag: 8)
        loop.schedule(at: .now(), for: b, tag: 9)
        // Both ends become readable in the same batch; the first handler detaches the second.
        first.onReady = { _ in loop.detach(b) }
        _ = write(fds[0], "x", 1)
        _ = write(fds[1], "y", 1)
        usleep(10_000)
        try loop.runOnce(timeoutMilliseconds: 100)
        try loop.runOnce(timeoutMilliseconds: 10)
        XCTAssertEqual(first.events.first?.0, 7)
        // The second may have run before the first in the batch; after detach nothing more arrives.
        let seen = second.events.count
        try loop.runOnce(timeoutMilliseconds: 10)
        XCTAssertEqual(second.events.count, seen)
        XCTAssertEqual(second.timers, [], "a detached handler's timer is dropped")
        XCTAssertEqual(loop.handlerCount, 1)
    }

    func testStopFromAnotherThreadWakesTheLoop() throws {
        let loop = try EventLoop()
        let waker = loop.waker
        let stopper = try LoopThread(name: "stopper") {
            usleep(50_000)
            waker.stop()
        }
        try loop.run()  // returns only because of the eventfd wake-up
        stopper.join()
        XCTAssertTrue(loop.waker.stopRequested)
    }

    func testSignalArrivesThroughTheLoop() throws {
        EventLoop.blockSignals([SIGUSR2])
        let loop = try EventLoop()
        let got = Mutex<Int32>(0)
        try loop.watchSignals([SIGUSR2]) { signal in got.withLock { $0 = signal } }
        pthread_kill(pthread_self(), SIGUSR2)  // to this thread, where it is blocked
        for _ in 0..<50 where got.withLock({ $0 }) == 0 { try loop.runOnce(timeoutMilliseconds: 100) }
        XCTAssertEqual(got.withLock { $0 }, SIGUSR2)
    }
}
