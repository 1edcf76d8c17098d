import Glibc
import LinuxIO
import Relay
import TestSupport

/// A relay on 127.0.0.1 (or another address) running its own loop thread, as berth runs it:
/// TCP or UDP, as its listener is.
final class RelayHarness {
    let listener: Listener
    private let loop: EventLoop
    private let context: RelayContext
    private var thread: LoopThread?

    var address: SocketAddress { listener.address }

    /// With `frozenClock`, the loop's clock stands still until `advanceClock(by:)` moves it: timeouts
    /// fire when the test says, never from wall time.
    convenience init(
        target: SocketAddress,
        host: String = "127.0.0.1",
        config: RelayConfig = RelayConfig(),
        frozenClock: Bool = false
    ) throws {
        try self.init(
            listener: Listener.tcp(SocketAddress(ip: host, port: 0)!),
            target: target,
            config: config,
            frozenClock: frozenClock
        )
    }

    /// A UDP relay listening on `host:port` (port 0: the kernel picks).
    convenience init(
        udpTarget target: SocketAddress,
        host: String = "127.0.0.1",
        port: UInt16 = 0,
        config: RelayConfig = RelayConfig(),
        frozenClock: Bool = false
    ) throws {
        try self.init(
            listener: Listener.udp(SocketAddress(ip: host, port: port)!),
            target: target,
            config: config,
            frozenClock: frozenClock
        )
    }

    /// Serves a listener made elsewhere (an adopted socket, say).
    init(
        listener: Listener,
        target: SocketAddress,
        config: RelayConfig = RelayConfig(),
        frozenClock: Bool = false
    ) throws {
        self.listener = listener
        loop = try EventLoop()
        if frozenClock { loop.frozenNow = loop.now }
        context = RelayContext(loop: loop, config: config)
        if listener.isTCP {
            try TCPAcceptor(listener: listener, target: target, context: context).start()
        } else {
            try UDPRelay(listener: listener, target: target, context: context).start()
        }
        let handover = Handover(loop)
        thread = try LoopThread(name: "relay-under-test") {
            do { try handover.value.run() } catch { fatalError("loop: \(error)") }
        }
    }

    /// Stops the loop and returns its counters (read after the thread has ended). The loop
    /// closed everything it owned on its way out: listener, connections, flows, pipes.
    @discardableResult
    func stop() -> MappingCounters {
        loop.waker.stop()
        thread?.join()
        thread = nil
        return context.counters
    }

    /// Moves a frozen clock on by `duration`, on the loop's thread, and returns once the loop has
    /// served what that made due (timers fire in the same wake-up).
    func advanceClock(by duration: Duration) {
        let done = Semaphore()
        let loop = Handover(self.loop)
        self.loop.waker.post {
            if let now = loop.value.frozenNow { loop.value.frozenNow = now + duration }
            done.signal()
        }
        done.wait()
        // One more round trip: the timers the move made due have fired by the time it runs.
        let fired = Semaphore()
        self.loop.waker.post { fired.signal() }
        fired.wait()
    }

    /// Bytes one stream may move per wake-up; read after `stop()`.
    var wakeBudget: Int { context.wakeBudget }

    /// Entries in the loop's timer heap; read after `stop()`.
    var pendingTimers: Int { loop.pendingTimers }

    deinit { stop() }
}

/// A port on 127.0.0.1 that nothing listens on (bound, then closed).
func unusedPort() -> UInt16 {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    let a = SocketAddress(ip: "127.0.0.1", port: 0)!
    _ = a.withSockAddr { bind(fd, $0, $1) }
    return (try? Socket.localAddress(fd).port) ?? 1
}

/// An order-sensitive checksum of a stream, computed chunk by chunk.
struct StreamSum {
    private(set) var value: UInt64 = fnvOffset
    private(set) var count = 0
    mutating func add(_ bytes: [UInt8]) {
        fnv1a(bytes, into: &value)
        count += bytes.count
    }
}
