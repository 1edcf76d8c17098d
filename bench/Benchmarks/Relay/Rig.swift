// The rig the micro-benchmarks drive: berth's relay (a TCPAcceptor on an EventLoop and its
// RelayContext) runs on the benchmark thread itself, one `runOnce` at a time, so its
// counters (`spliceCalls`, `EventLoop.waits`) are read without a race and the work
// measured is the relay's. The load sits on plain blocking threads that allocate nothing
// once started: a client that sends what it is told to, a sink that discards, an echo
// backend for connection set-up and tear-down.

import CBench
import Glibc
import LinuxIO
import Relay
import Synchronization

enum RigError: Error, CustomStringConvertible {
    case failed(String)
    var description: String {
        switch self {
        case .failed(let text): text
        }
    }
}

func check(_ rc: Int32, _ what: String) throws -> Int32 {
    if rc < 0 { throw RigError.failed("\(what): \(String(cString: strerror(errno)))") }
    return rc
}

/// A blocking TCP listener on 127.0.0.1 with a port the kernel picks.
func blockingListener() throws -> (fd: Int32, address: SocketAddress) {
    let fd = try check(socket(AF_INET, Int32(SOCK_STREAM.rawValue) | CBench_SOCK_CLOEXEC, 0), "socket")
    var one: Int32 = 1
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
    let any = SocketAddress(ip: "127.0.0.1", port: 0)!
    _ = try check(any.withSockAddr { bind(fd, $0, $1) }, "bind")
    _ = try check(listen(fd, 1024), "listen")
    return (fd, try boundAddress(fd))
}

func blockingConnect(_ address: SocketAddress) -> Int32 {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | CBench_SOCK_CLOEXEC, 0)
    guard fd >= 0 else { return -1 }
    if address.withSockAddr({ connect(fd, $0, $1) }) != 0 {
        close(fd)
        return -1
    }
    var one: Int32 = 1
    setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
    return fd
}

/// Sends every byte of `count` from `buffer` (blocking), in chunks of at most the buffer.
func sendAll(_ fd: Int32, _ buffer: UnsafeMutableRawBufferPointer, _ count: Int) -> Bool {
    var left = count
    while left > 0 {
        let n = send(fd, buffer.baseAddress, min(left, buffer.count), Int32(MSG_NOSIGNAL))
        if n < 0 {
            if errno == EINTR { continue }
            return false
        }
        left -= n
    }
    return true
}

/// A one-way channel of 8-byte commands between threads (a pipe: blocking reads, no allocation).
final class Commands: @unchecked Sendable {
    let readFD: Int32
    let writeFD: Int32

    init() throws {
        var fds: [Int32] = [0, 0]
        _ = try check(CBench_pipe2(&fds, CBench_O_CLOEXEC), "pipe2")
        readFD = fds[0]
        writeFD = fds[1]
    }

    func send(_ value: UInt64) {
        var v = value
        _ = write(writeFD, &v, 8)
    }

    /// nil once the writer closed.
    func receive() -> UInt64? {
        var v: UInt64 = 0
        while true {
            let n = read(readFD, &v, 8)
            if n == 8 { return v }
            if n < 0 && errno == EINTR { continue }
            return nil
        }
    }

    func closeWriter() { close(writeFD) }
    deinit {
        close(readFD)
    }
}

/// berth's relay on the calling thread: a listener on 127.0.0.1 towards `target`.
final class RelayUnderTest {
    let listener: Listener
    let loop: EventLoop
    let context: RelayContext

    init(target: SocketAddress) throws {
        listener = try Listener.tcp(SocketAddress(ip: "127.0.0.1", port: 0)!)
        loop = try EventLoop()
        context = RelayContext(loop: loop)
        try TCPAcceptor(listener: listener, target: target, context: context).start()
    }

    /// Runs the loop until `done` holds (checked after every wait), or fails after 10 s idle.
    /// A wait with connections on the ready list does not sleep and may see no event while
    /// those connections move bytes: that is work, not idleness.
    @inline(__always)
    func run(until done: (MappingCounters) -> Bool) throws {
        while !done(context.counters) {
            let before = loop.eventsHandled
            let queued = loop.readyCount
            try loop.runOnce(timeoutMilliseconds: 10_000)
            if loop.eventsHandled == before && queued == 0 && !done(context.counters) {
                throw RigError.failed("the relay saw nothing for 10 s")
            }
        }
    }
}

/// One client connection through the relay into a sink; `transfer(bytes)` moves that many
/// bytes client → relay → sink and returns when the relay has written them all to the sink.
final class BulkRig {
    let relay: RelayUnderTest
    private let sinkListener: Int32
    private let commands: Commands
    private var sinkThread: LoopThread?
    private var clientThread: LoopThread?

    init() throws {
        let (fd, address) = try blockingListener()
        sinkListener = fd
        relay = try RelayUnderTest(target: address)
        commands = try Commands()
        sinkThread = try LoopThread(name: "bench-sink") {
            let conn = accept(fd, nil, nil)
            guard conn >= 0 else { return }
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 18, alignment: 64)
            while true {
                let n = recv(conn, buffer.baseAddress, buffer.count, 0)
                if n == 0 || (n < 0 && errno != EINTR) { break }
            }
            buffer.deallocate()
            close(conn)
        }
        let relayAddress = relay.listener.address
        let commands = self.commands
        clientThread = try LoopThread(name: "bench-client") {
            let fd = blockingConnect(relayAddress)
            guard fd >= 0 else { return }
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 18, alignment: 64)
            buffer.initializeMemory(as: UInt8.self, repeating: 0x5A)
            while let count = commands.receive() {
                if !sendAll(fd, buffer, Int(count)) { break }
            }
            buffer.deallocate()
            close(fd)
        }
        // The connection is accepted and connected on the first transfer's waits.
    }

    func transfer(_ bytes: Int) throws {
        let target = relay.context.counters.bytesToBackend + UInt64(bytes)
        commands.send(UInt64(bytes))
        try relay.run { $0.bytesToBackend >= target }
    }

    func stop() {
        commands.closeWriter()
        // The client closes; the relay passes the EOF on and the sink ends.
        try? relay.run { $0.closed >= 1 }
        clientThread?.join()
        sinkThread?.join()
        close(sinkListener)
    }
}

/// Connection set-up and tear-down through the relay: a client thread connects, sends one
/// byte, reads the echo, closes; an echo backend answers. `once()` returns when the relay
/// has closed that connection on both sides.
final class ConnectRig {
    let relay: RelayUnderTest
    private let backendListener: Int32
    private let commands: Commands
    private var backendThread: LoopThread?
    private var clientThread: LoopThread?

    init() throws {
        let (fd, address) = try blockingListener()
        backendListener = fd
        relay = try RelayUnderTest(target: address)
        commands = try Commands()
        backendThread = try LoopThread(name: "bench-echo") {
            var byte: UInt8 = 0
            while true {
                let conn = accept(fd, nil, nil)
                if conn < 0 {
                    if errno == EINTR || errno == ECONNABORTED { continue }
                    return
                }
                if recv(conn, &byte, 1, 0) == 1 {
                    _ = send(conn, &byte, 1, Int32(MSG_NOSIGNAL))
                    while recv(conn, &byte, 1, 0) > 0 {}
                }
                close(conn)
            }
        }
        let relayAddress = relay.listener.address
        let commands = self.commands
        clientThread = try LoopThread(name: "bench-client") {
            var byte: UInt8 = 7
            while commands.receive() != nil {
                let fd = blockingConnect(relayAddress)
                guard fd >= 0 else { return }
                _ = send(fd, &byte, 1, Int32(MSG_NOSIGNAL))
                _ = recv(fd, &byte, 1, 0)
                close(fd)
            }
        }
    }

    func once() throws {
        let target = relay.context.counters.closed + 1
        commands.send(1)
        try relay.run { $0.closed >= target }
    }

    func stop() {
        commands.closeWriter()
        clientThread?.join()
        // Unblocks the echo thread's accept.
        shutdown(backendListener, Int32(SHUT_RDWR))
        backendThread?.join()
        close(backendListener)
    }
}

/// One UDP flow through berth's UDPRelay: a client thread sends bursts of 64-byte datagrams,
/// a sink thread drains the backend socket; `burst(n)` returns when the relay has sent `n`
/// more datagrams to the backend (or saw nothing for a second: then what arrived counts).
final class DatagramRig {
    let loop: EventLoop
    let context: RelayContext
    private let relay: UDPRelay
    private let listener: Listener
    private let sink: Int32
    private let commands: Commands
    private var clientThread: LoopThread?
    private var sinkThread: LoopThread?
    private let stopSink = Commands.Flag()

    init() throws {
        let sinkFD = try check(socket(AF_INET, Int32(SOCK_DGRAM.rawValue) | CBench_SOCK_CLOEXEC, 0), "socket")
        sink = sinkFD
        let any = SocketAddress(ip: "127.0.0.1", port: 0)!
        _ = try check(any.withSockAddr { bind(sinkFD, $0, $1) }, "bind")
        var tv = timeval(tv_sec: 0, tv_usec: 100_000)
        setsockopt(sinkFD, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        let sinkAddress = try boundAddress(sinkFD)
        listener = try Listener.udp(any)
        loop = try EventLoop()
        context = RelayContext(loop: loop)
        relay = UDPRelay(listener: listener, target: sinkAddress, context: context)
        try relay.start()
        commands = try Commands()
        let stop = stopSink
        sinkThread = try LoopThread(name: "bench-usink") {
            while !stop.isSet {
                _ = recv(sinkFD, nil, 65536, Int32(MSG_TRUNC))
            }
        }
        let relayAddress = listener.address
        let commands = self.commands
        clientThread = try LoopThread(name: "bench-uclient") {
            let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue) | CBench_SOCK_CLOEXEC, 0)
            guard fd >= 0, relayAddress.withSockAddr({ connect(fd, $0, $1) }) == 0 else { return }
            let batch = 64
            let payload = UnsafeMutableRawBufferPointer.allocate(byteCount: 64, alignment: 64)
            payload.initializeMemory(as: UInt8.self, repeating: 0x75)
            let iov = UnsafeMutablePointer<iovec>.allocate(capacity: 1)
            iov.pointee = iovec(iov_base: payload.baseAddress, iov_len: 64)
            let messages = UnsafeMutablePointer<CBench_mmsghdr>.allocate(capacity: batch)
            for i in 0..<batch {
                var m = CBench_mmsghdr()
                m.msg_hdr.msg_iov = iov
                m.msg_hdr.msg_iovlen = 1
                messages[i] = m
            }
            while let count = commands.receive() {
                var left = Int(count)
                while left > 0 {
                    let n = CBench_sendmmsg(fd, messages, UInt32(min(batch, left)), 0)
                    if n > 0 { left -= Int(n) } else if errno != EINTR { break }
                }
            }
            messages.deallocate()
            iov.deallocate()
            payload.deallocate()
            close(fd)
        }
    }

    func burst(_ count: Int) throws {
        let target = context.counters.datagramsToBackend + UInt64(count)
        commands.send(UInt64(count))
        while context.counters.datagramsToBackend < target {
            let before = loop.eventsHandled
            try loop.runOnce(timeoutMilliseconds: 1000)
            if loop.eventsHandled == before { return }
        }
    }

    func stop() {
        commands.closeWriter()
        clientThread?.join()
        relay.stop()
        stopSink.set()
        sinkThread?.join()
        close(sink)
    }
}

extension Commands {
    /// A flag one thread sets and another polls.
    final class Flag: Sendable {
        private let value = Atomic<Bool>(false)
        func set() { value.store(true, ordering: .releasing) }
        var isSet: Bool { value.load(ordering: .acquiring) }
    }
}

/// 100,000 distinct client addresses (127.x.y.z:port) as flow keys.
func flowKeys(_ count: Int) -> [FlowKey] {
    var keys: [FlowKey] = []
    keys.reserveCapacity(count)
    for i in 0..<count {
        let ip: [UInt8] = [
            127, UInt8(truncatingIfNeeded: i >> 16), UInt8(truncatingIfNeeded: i >> 8), UInt8(truncatingIfNeeded: i),
        ]
        let port = UInt16(10_000 + i % 50_000)
        keys.append(FlowKey(SocketAddress(ip: ip, port: port)))
    }
    return keys
}

/// getsockname(2) of a socket the rig made with libc (berth's `Socket.localAddress` takes an owner).
func boundAddress(_ fd: Int32) throws -> SocketAddress {
    var address = SocketAddress()
    _ = try check(address.withMutableSockAddr { getsockname(fd, $0, $1) }, "getsockname")
    return address
}
