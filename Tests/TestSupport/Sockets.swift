// Blocking-socket helpers for tests: a test is a client or a server the way a user's
// program would be, with plain blocking calls and timeouts.

import CBerthLinux
import Glibc
import LinuxIO
import Synchronization

package struct TestFailure: Error, CustomStringConvertible {
    package let description: String
    package init(_ description: String) { self.description = description }
}

/// A blocking TCP socket owned by a test.
package final class TestSocket: @unchecked Sendable {
    package let fd: Int32
    /// A lock, not an atomic flag: `shutdownUnlessClosed` must never reach a descriptor number that
    /// `close` has just given back (and the kernel handed to someone else).
    private let closed = Mutex(false)

    package init(fd: Int32) { self.fd = fd }
    deinit { close() }

    package func close() {
        closed.withLock { closed in
            if !closed {
                closed = true
                Glibc.close(fd)
            }
        }
    }

    /// Ends both directions, so that a thread blocked reading or writing this socket returns; nothing
    /// once it is closed.
    package func shutdownUnlessClosed() {
        closed.withLock { closed in
            if !closed { Glibc.shutdown(fd, Int32(SHUT_RDWR)) }
        }
    }

    /// Connects with a receive/send timeout so a broken relay fails the test instead of hanging it.
    package static func connect(_ address: SocketAddress, timeoutSeconds: Int = 20) throws -> TestSocket {
        let fd = Glibc.socket(address.family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw TestFailure("socket: \(errnoText())") }
        let s = TestSocket(fd: fd)
        s.setTimeout(seconds: timeoutSeconds)
        let rc = address.withSockAddr { Glibc.connect(fd, $0, $1) }
        guard rc == 0 else { throw TestFailure("connect \(address): \(errnoText())") }
        return s
    }

    package func setTimeout(seconds: Int) {
        var tv = timeval(tv_sec: seconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    package func send(_ bytes: [UInt8]) throws {
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes {
                Glibc.send(fd, $0.baseAddress! + offset, bytes.count - offset, Int32(MSG_NOSIGNAL))
            }
            if n < 0 {
                if errno == EINTR { continue }
                throw TestFailure("send: \(errnoText())")
            }
            offset += n
        }
    }

    package func send(_ text: String) throws { try send(Array(text.utf8)) }

    /// Reads up to `max` bytes; empty at end of file. Throws on error or timeout.
    package func receive(max: Int = 65536) throws -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: max)
        while true {
            let n = buffer.withUnsafeMutableBytes { Glibc.recv(fd, $0.baseAddress, max, 0) }
            if n < 0 {
                if errno == EINTR { continue }
                throw TestFailure("recv: \(errnoText())")
            }
            return Array(buffer[0..<n])
        }
    }

    package func receive(exactly count: Int) throws -> [UInt8] {
        var result: [UInt8] = []
        while result.count < count {
            let chunk = try receive(max: min(65536, count - result.count))
            if chunk.isEmpty { throw TestFailure("end of file after \(result.count) of \(count) bytes") }
            result += chunk
        }
        return result
    }

    /// Reads until end of file.
    package func receiveAll() throws -> [UInt8] {
        var result: [UInt8] = []
        while true {
            let chunk = try receive()
            if chunk.isEmpty { return result }
            result += chunk
        }
    }

    /// What the next read says: bytes, end of file, or the errno (ECONNRESET).
    package func receiveOutcome() -> (bytes: [UInt8], errno: Int32) {
        var buffer = [UInt8](repeating: 0, count: 65536)
        let n = buffer.withUnsafeMutableBytes { Glibc.recv(fd, $0.baseAddress, 65536, 0) }
        if n < 0 { return ([], errno) }
        return (Array(buffer[0..<n]), 0)
    }

    package func shutdownWrite() { Glibc.shutdown(fd, Int32(SHUT_WR)) }

    /// Closes with RST instead of FIN.
    package func reset() {
        var l = linger(l_onoff: 1, l_linger: 0)
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, socklen_t(MemoryLayout<linger>.size))
        close()
    }
}

package func errnoText(_ e: Int32 = errno) -> String { String(cString: strerror(e)) }

/// A blocking TCP server on a loopback address; each client is served on its own thread.
///
/// Every thread it starts is joined (ThreadSanitizer reports a thread that ends unjoined as a leak):
/// a client's thread by the accept loop once it has finished, the rest by `stop`, which the server's
/// `deinit` calls. `stop` shuts the clients' sockets down first, so that their handlers return.
package final class TestServer: @unchecked Sendable {
    package let address: SocketAddress
    private let listenFD: Int32
    private var thread: LoopThread?
    /// What the accept loop shares with the server; the loop does not hold the server itself, so that
    /// the server's `deinit` can stop it.
    private let state = State()

    private final class State: Sendable {
        let accepted = Atomic<Int>(0)
        let clients = Mutex<[Client]>([])
    }

    /// One accepted client and the thread that serves it.
    private final class Client: @unchecked Sendable {
        /// Weak: the handler's thread owns the socket, which closes when the handler lets it go.
        weak var socket: TestSocket?
        let finished = Atomic<Bool>(false)
        /// Set by the accept loop right after the thread starts; read after that loop is joined.
        var thread: LoopThread?
        init(_ socket: TestSocket) { self.socket = socket }
    }

    package var acceptedCount: Int { state.accepted.load(ordering: .relaxed) }

    package init(host: String = "127.0.0.1", port: UInt16 = 0, handler: @escaping @Sendable (TestSocket) -> Void) throws
    {
        let bindAddress = SocketAddress(ip: host, port: port)!
        let fd = Glibc.socket(bindAddress.family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, 4)
        if bindAddress.isV6 { setsockopt(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, &one, 4) }
        guard bindAddress.withSockAddr({ Glibc.bind(fd, $0, $1) }) == 0, Glibc.listen(fd, 1024) == 0 else {
            let text = errnoText()
            Glibc.close(fd)
            throw TestFailure("test server bind \(bindAddress): \(text)")
        }
        listenFD = fd
        address = try Socket.localAddress(fd)
        let state = self.state
        thread = try LoopThread(name: "test-server") { Self.acceptLoop(fd, state, handler) }
    }

    private static func acceptLoop(
        _ listenFD: Int32,
        _ state: State,
        _ handler: @escaping @Sendable (TestSocket) -> Void
    ) {
        while true {
            let fd = CBerthLinux_accept4(listenFD, nil, nil, CBerthLinux_SOCK_CLOEXEC)
            if fd < 0 {
                if errno == EINTR || errno == ECONNABORTED { continue }
                return  // closed by stop()
            }
            state.accepted.add(1, ordering: .relaxed)
            let socket = TestSocket(fd: fd)
            socket.setTimeout(seconds: 30)
            let client = Client(socket)
            client.thread = try? LoopThread(name: "test-conn") {
                handler(socket)
                client.finished.store(true, ordering: .releasing)
            }
            state.clients.withLock { clients in
                clients.removeAll { done in
                    guard done.finished.load(ordering: .acquiring) else { return false }
                    done.thread?.join()
                    return true
                }
                clients.append(client)
            }
        }
    }

    package func stop() {
        Glibc.shutdown(listenFD, Int32(SHUT_RDWR))
        Glibc.close(listenFD)
        thread?.join()
        thread = nil
        let clients = state.clients.withLock { clients in
            defer { clients = [] }
            return clients
        }
        for client in clients {
            client.socket?.shutdownUnlessClosed()
            client.thread?.join()
        }
    }

    deinit { if thread != nil { stop() } }

    /// Echoes everything back, then closes after the client's EOF.
    package static func echo(host: String = "127.0.0.1") throws -> TestServer {
        try TestServer(host: host) { socket in
            while let chunk = try? socket.receive(), !chunk.isEmpty {
                if (try? socket.send(chunk)) == nil { break }
            }
            socket.close()
        }
    }
}

/// Open descriptors of this process, or of `pid`.
package func openDescriptorCount(pid: Int32? = nil) -> Int { countDescriptors(pid: pid) }

/// Sockets among the open descriptors of `pid` (or this process).
package func openSocketCount(pid: Int32? = nil) -> Int {
    countDescriptors(pid: pid) { readLink($0)?.hasPrefix("socket:") == true }
}

/// This process's open descriptors, each as "number -> what it is" (its /proc link), without
/// the one that lists them.
package func openDescriptors() -> Set<String> {
    guard let dir = opendir("/proc/self/fd") else { return [] }
    defer { closedir(dir) }
    let own = "\(dirfd(dir))"
    var open: Set<String> = []
    while let entry = readdir(dir) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        guard name != "." && name != ".." && name != own else { continue }
        open.insert(name + " -> " + (readLink("/proc/self/fd/" + name) ?? "?"))
    }
    return open
}

/// Descriptors open now that were not open at `baseline` (`openDescriptors()`): what a test left
/// open. Unlike comparing counts, a descriptor of another test's thread closing meanwhile does
/// not hide one left open here, nor fail the test (a reused number names another file).
package func descriptorsLeftOpen(since baseline: Set<String>) -> [String] {
    openDescriptors().subtracting(baseline).sorted()
}

/// Open descriptors of `pid` (or this process) whose /proc path `keep` accepts; -1 if they cannot be listed.
private func countDescriptors(pid: Int32?, where keep: (String) -> Bool = { _ in true }) -> Int {
    let path = pid.map { "/proc/\($0)/fd" } ?? "/proc/self/fd"
    guard let dir = opendir(path) else { return -1 }
    defer { closedir(dir) }
    var count = 0
    while let entry = readdir(dir) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        if name != "." && name != ".." && keep(path + "/" + name) { count += 1 }
    }
    return count
}

/// Polls `condition` every 10 ms until it holds or `seconds` pass; the answer, not the time, is what tests assert.
package func eventually(seconds: Double = 10, _ condition: () -> Bool) -> Bool {
    let deadline = Instant.now() + .milliseconds(Int(seconds * 1000))
    while Instant.now() < deadline {
        if condition() { return true }
        usleep(10_000)
    }
    return condition()
}

/// A deterministic byte pattern and a checksum to compare transfers without keeping both copies.
package func pattern(_ count: Int, seed: UInt64) -> [UInt8] {
    var x = seed | 1
    var out = [UInt8](repeating: 0, count: count)
    for i in 0..<count {
        x ^= x << 13
        x ^= x >> 7
        x ^= x << 17
        out[i] = UInt8(truncatingIfNeeded: x)
    }
    return out
}

package func fnv1a(_ bytes: [UInt8], into hash: inout UInt64) {
    for b in bytes {
        hash ^= UInt64(b)
        hash = hash &* 0x100_0000_01b3
    }
}

package let fnvOffset: UInt64 = 0xcbf2_9ce4_8422_2325

/// A TCP port on 127.0.0.1 and ::1 that nothing listens on right now (bound, then closed).
package func freePort() -> UInt16 {
    for _ in 0..<20 {
        if let port = bindDualStack(port: 0) { return port }
    }
    return 0
}

/// Two consecutive free ports (p, p + 1), for range specs: below the ephemeral range, where
/// the TIME_WAIT of earlier tests' client sockets does not land.
package func freePortPair() -> UInt16 {
    for _ in 0..<200 {
        let p = UInt16.random(in: 20000..<32000)
        if bindDualStack(port: p) != nil && bindDualStack(port: p + 1) != nil { return p }
    }
    return 0
}

/// Binds `port` (0: any) on `::` for both families, with SO_REUSEADDR as berth binds (TIME_WAIT
/// does not count), and closes again; the port bound, or nil when it is taken.
private func bindDualStack(port: UInt16) -> UInt16? {
    let fd = socket(AF_INET6, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var off: Int32 = 0
    var on: Int32 = 1
    setsockopt(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, &off, 4)
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, 4)
    guard SocketAddress(ip: "::", port: port)!.withSockAddr({ bind(fd, $0, $1) }) == 0 else { return nil }
    return try? Socket.localAddress(fd).port
}
