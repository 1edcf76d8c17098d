// Blocking UDP helpers for tests: a client or a backend the way a user's program would be,
// with plain blocking calls and receive timeouts, so a broken relay fails a test instead of
// hanging it.

import CBerthLinux
import Glibc
import LinuxIO
import Synchronization

/// A blocking UDP socket owned by a test.
package final class TestUDPSocket: @unchecked Sendable {
    package let fd: Int32
    package let family: Int32
    private let closed = Atomic<Bool>(false)

    /// A socket bound to `host:port` (port 0: the kernel picks), with a receive timeout.
    package init(host: String = "127.0.0.1", port: UInt16 = 0, timeoutMilliseconds: Int = 10_000) throws {
        let address = SocketAddress(ip: host, port: port)!
        family = address.family
        fd = Glibc.socket(address.family, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw TestFailure("socket: \(errnoText())") }
        var one: Int32 = 1
        if address.isV6 { setsockopt(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, &one, 4) }
        // Room for bursts of large datagrams without loss on loopback.
        var size: Int32 = 4 << 20
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, 4)
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, 4)
        setTimeout(milliseconds: timeoutMilliseconds)
        guard address.withSockAddr({ Glibc.bind(fd, $0, $1) }) == 0 else {
            let text = errnoText()
            Glibc.close(fd)
            throw TestFailure("bind \(address): \(text)")
        }
    }

    deinit { close() }

    package func close() {
        if !closed.exchange(true, ordering: .acquiringAndReleasing) { Glibc.close(fd) }
    }

    package var localAddress: SocketAddress { (try? Socket.localAddress(fd)) ?? SocketAddress() }

    package func setTimeout(milliseconds: Int) {
        var tv = timeval(tv_sec: milliseconds / 1000, tv_usec: (milliseconds % 1000) * 1000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    /// Connects: sends go to `address`, and only datagrams from it are received.
    package func connect(_ address: SocketAddress) throws {
        guard address.withSockAddr({ Glibc.connect(fd, $0, $1) }) == 0 else {
            throw TestFailure("connect \(address): \(errnoText())")
        }
    }

    /// Sends one datagram on a connected socket.
    package func send(_ bytes: [UInt8]) throws {
        let n = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, bytes.count, 0) }
        guard n == bytes.count else {
            throw TestFailure("send \(bytes.count) bytes: \(n < 0 ? errnoText() : "sent \(n)")")
        }
    }

    package func send(_ text: String) throws { try send(Array(text.utf8)) }

    /// Sends one datagram to `address`.
    package func send(_ bytes: [UInt8], to address: SocketAddress) throws {
        let n = bytes.withUnsafeBytes { raw in
            address.withSockAddr { Glibc.sendto(fd, raw.baseAddress, bytes.count, 0, $0, $1) }
        }
        guard n == bytes.count else {
            throw TestFailure("sendto \(address) \(bytes.count) bytes: \(n < 0 ? errnoText() : "sent \(n)")")
        }
    }

    /// Receives one datagram and says who sent it. Throws on timeout, error, or a datagram
    /// larger than 65,536 bytes (MSG_TRUNC), so a truncation never passes for a short datagram.
    package func receiveFrom() throws -> (bytes: [UInt8], from: SocketAddress) {
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        var from = SocketAddress()
        while true {
            let n = buffer.withUnsafeMutableBytes { raw in
                from.withMutableSockAddr { Glibc.recvfrom(fd, raw.baseAddress, raw.count, Int32(MSG_TRUNC), $0, $1) }
            }
            if n < 0 {
                if errno == EINTR { continue }
                throw TestFailure("recvfrom: \(errnoText())")
            }
            if n > buffer.count { throw TestFailure("datagram of \(n) bytes truncated to \(buffer.count)") }
            return (Array(buffer[0..<n]), from)
        }
    }

    package func receive() throws -> [UInt8] { try receiveFrom().bytes }

    /// What the next receive says: a datagram, or the errno (EAGAIN on timeout, ECONNREFUSED).
    package func receiveOutcome() -> (bytes: [UInt8]?, errno: Int32) {
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = buffer.withUnsafeMutableBytes { Glibc.recv(fd, $0.baseAddress, $0.count, 0) }
            if n >= 0 { return (Array(buffer[0..<n]), 0) }
            let e = errno
            if e != EINTR { return (nil, e) }
        }
    }
}

/// A UDP backend on a loopback address that echoes every datagram to its sender, on its own
/// thread, and remembers which addresses it heard from.
package final class TestUDPEchoServer: @unchecked Sendable {
    package let socket: TestUDPSocket
    package var address: SocketAddress { socket.localAddress }
    private let stopping = Atomic<Bool>(false)
    private let received = Atomic<Int>(0)
    private let peers = Mutex<[SocketAddress]>([])
    private var thread: LoopThread?

    package var receivedCount: Int { received.load(ordering: .relaxed) }
    /// Distinct senders in order of first datagram.
    package var senders: [SocketAddress] { peers.withLock { $0 } }

    package init(host: String = "127.0.0.1", port: UInt16 = 0) throws {
        socket = try TestUDPSocket(host: host, port: port, timeoutMilliseconds: 100)
        thread = try LoopThread(name: "test-udp-echo") { [self] in self.serve() }
    }

    private func serve() {
        while !stopping.load(ordering: .acquiring) {
            guard let (bytes, from) = try? socket.receiveFrom() else { continue }
            received.add(1, ordering: .relaxed)
            peers.withLock { if !$0.contains(from) { $0.append(from) } }
            try? socket.send(bytes, to: from)
        }
    }

    package func stop() {
        stopping.store(true, ordering: .releasing)
        thread?.join()
        thread = nil
        socket.close()
    }

    deinit { stop() }
}

/// Binds `host:port` if no other socket holds it: the returned socket then keeps the port, so
/// that nothing else takes it. nil when the port is in use.
package func claimUDPPort(_ host: String, _ port: UInt16) -> TestUDPSocket? {
    try? TestUDPSocket(host: host, port: port, timeoutMilliseconds: 100)
}

/// A UDP port on `host` that nothing is bound to (bound, then closed).
package func unusedUDPPort(_ host: String = "127.0.0.1") -> UInt16 {
    guard let s = try? TestUDPSocket(host: host) else { return 1 }
    defer { s.close() }
    return s.localAddress.port
}
