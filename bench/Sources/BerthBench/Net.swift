// Sockets for the load generators and backends: plain libc calls, made inside a chosen
// network namespace (a socket belongs to the namespace it was made in, for life, whichever
// thread uses it later).

import CBench
import Glibc
import LinuxIO

struct BenchError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

func errnoText(_ e: Int32 = errno) -> String { String(cString: strerror(e)) }

@discardableResult
func check(_ rc: Int32, _ what: @autoclosure () -> String) throws -> Int32 {
    if rc < 0 { throw BenchError("\(what()): \(errnoText())") }
    return rc
}

/// Monotonic nanoseconds.
@inline(__always)
func nowNanos() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
}

func sleepSeconds(_ s: Double) {
    var ts = timespec(tv_sec: Int(s), tv_nsec: Int((s - Double(Int(s))) * 1e9))
    var left = timespec()
    while nanosleep(&ts, &left) != 0 && errno == EINTR { ts = left }
}

/// A value handed between threads where a join orders the accesses.
final class Box<T>: @unchecked Sendable {
    var value: T
    init(_ value: T) { self.value = value }
}

enum Net {
    static let tcp = Int32(SOCK_STREAM.rawValue)
    static let udp = Int32(SOCK_DGRAM.rawValue)

    /// Runs `body` on a thread inside namespace `name` (nil: the runner's own namespace).
    static func inside<T>(_ name: String?, _ body: () throws -> T) throws -> T {
        guard let name else { return try body() }
        let fd = open("/run/netns/\(name)", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw BenchError("open netns \(name): \(errnoText())") }
        defer { close(fd) }
        let out = Box<Result<T, any Error>?>(nil)
        try withoutActuallyEscaping(body) { body in
            let work = Box(body)
            let thread = try LoopThread(name: "bench-netns") {
                guard CBench_setns(fd, CBench_CLONE_NEWNET) == 0 else {
                    out.value = .failure(BenchError("setns \(name): \(errnoText())"))
                    return
                }
                out.value = Result { try work.value() }
            }
            thread.join()
        }
        return try out.value!.get()
    }

    static func socket(_ family: Int32, _ type: Int32, nonBlocking: Bool) throws -> Int32 {
        let flags = type | CBench_SOCK_CLOEXEC | (nonBlocking ? CBench_SOCK_NONBLOCK : 0)
        return try check(Glibc.socket(family, flags, 0), "socket")
    }

    static func setInt(_ fd: Int32, _ level: Int32, _ name: Int32, _ value: Int32) {
        var v = value
        setsockopt(fd, level, name, &v, socklen_t(MemoryLayout<Int32>.size))
    }

    static func noDelay(_ fd: Int32) { setInt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, 1) }

    /// A listening (TCP) or bound (UDP) socket at `address` (port 0: any), in namespace `ns`.
    static func serve(
        _ address: SocketAddress,
        type: Int32,
        ns: String?,
        nonBlocking: Bool
    ) throws -> (fd: Int32, address: SocketAddress) {
        try inside(ns) {
            let fd = try socket(address.family, type, nonBlocking: nonBlocking)
            setInt(fd, SOL_SOCKET, SO_REUSEADDR, 1)
            if type == udp {
                // Room for bursts: the sink must not be why datagrams are lost.
                setInt(fd, SOL_SOCKET, SO_RCVBUFFORCE, 8 << 20)
                setInt(fd, SOL_SOCKET, SO_SNDBUFFORCE, 8 << 20)
            }
            guard address.withSockAddr({ Glibc.bind(fd, $0, $1) }) == 0 else {
                let e = errnoText()
                close(fd)
                throw BenchError("bind \(address): \(e)")
            }
            if type == tcp { try check(listen(fd, 4096), "listen \(address)") }
            return (fd, try boundAddress(fd))
        }
    }

    /// A blocking, connected socket from namespace `ns` (TCP_NODELAY for TCP).
    static func connect(_ address: SocketAddress, type: Int32, ns: String?, timeoutSeconds: Int = 5) throws -> Int32 {
        try inside(ns) {
            let fd = try socket(address.family, type, nonBlocking: false)
            if type == tcp { noDelay(fd) }
            var tv = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
            guard address.withSockAddr({ Glibc.connect(fd, $0, $1) }) == 0 else {
                let e = errnoText()
                close(fd)
                throw BenchError("connect \(address): \(e)")
            }
            tv = timeval(tv_sec: 0, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
            return fd
        }
    }

    static func setReceiveTimeout(_ fd: Int32, milliseconds: Int) {
        var tv = timeval(tv_sec: milliseconds / 1000, tv_usec: (milliseconds % 1000) * 1000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    /// Reads exactly `count` bytes (blocking); false on EOF, error or time-out.
    @inline(__always)
    static func readFull(_ fd: Int32, _ buffer: UnsafeMutableRawPointer, _ count: Int) -> Bool {
        var got = 0
        while got < count {
            let n = recv(fd, buffer + got, count - got, 0)
            if n > 0 {
                got += n
            } else if n < 0 && errno == EINTR {
                continue
            } else {
                return false
            }
        }
        return true
    }

    /// Free TCP and UDP ports on `ip` in namespace `ns`, from `start` upward (below the
    /// ephemeral range, so that no client connect takes one meanwhile).
    static func freePorts(_ count: Int, ip: String, ns: String?, start: inout UInt16) throws -> [UInt16] {
        try inside(ns) {
            var ports: [UInt16] = []
            var tries = 0
            while ports.count < count {
                tries += 1
                if tries > 60_000 { throw BenchError("no \(count) free ports on \(ip)") }
                let port = start
                start = start >= 32_000 ? 10_000 : start + 1
                let address = SocketAddress(ip: ip, port: port)!
                var free = true
                for type in [tcp, udp] {
                    let fd = Glibc.socket(address.family, type | CBench_SOCK_CLOEXEC, 0)
                    if fd < 0 {
                        free = false
                        break
                    }
                    let rc = address.withSockAddr { Glibc.bind(fd, $0, $1) }
                    close(fd)
                    if rc != 0 {
                        free = false
                        break
                    }
                }
                if free { ports.append(port) }
            }
            return ports
        }
    }
}

// The generators and backends keep thousands of plain descriptor numbers in arrays, opened and
// closed with libc; berth's LinuxIO calls take owners, so these few are the bench's own.

/// getsockname(2).
func boundAddress(_ fd: Int32) throws -> SocketAddress {
    var address = SocketAddress()
    guard address.withMutableSockAddr({ getsockname(fd, $0, $1) }) == 0 else {
        throw BenchError("getsockname: \(errnoText())")
    }
    return address
}

/// SO_ERROR: a connect's outcome (0: connected), -1 if it cannot be read.
func pendingError(_ fd: Int32) -> Int32 {
    var value: Int32 = 0
    var length = socklen_t(MemoryLayout<Int32>.size)
    return getsockopt(fd, SOL_SOCKET, SO_ERROR, &value, &length) == 0 ? value : -1
}

/// epoll for the generators and backends, edge- or level-triggered as `Interest` says, with
/// berth's `Readiness` reading of the events.
final class Poller {
    private let epoll: Int32
    private var events: UnsafeMutableBufferPointer<epoll_event>

    init(capacity: Int = 256) throws {
        epoll = epoll_create1(Int32(EPOLL_CLOEXEC))
        guard epoll >= 0 else { throw BenchError("epoll_create1: \(errnoText())") }
        events = .allocate(capacity: capacity)
    }

    deinit {
        close(epoll)
        events.deallocate()
    }

    func add(_ fd: Int32, _ interest: Interest, token: UInt64) throws {
        try control(EPOLL_CTL_ADD, fd, interest, token)
    }

    func modify(_ fd: Int32, _ interest: Interest, token: UInt64) throws {
        try control(EPOLL_CTL_MOD, fd, interest, token)
    }

    func remove(_ fd: Int32) { _ = epoll_ctl(epoll, EPOLL_CTL_DEL, fd, nil) }

    private func control(_ op: Int32, _ fd: Int32, _ interest: Interest, _ token: UInt64) throws {
        var event = epoll_event()
        event.events = interest.rawValue
        event.data.u64 = token
        guard epoll_ctl(epoll, op, fd, &event) == 0 else { throw BenchError("epoll_ctl: \(errnoText())") }
    }

    @inline(__always)
    func wait(milliseconds: Int32) -> Int {
        max(0, Int(epoll_wait(epoll, events.baseAddress, Int32(events.count), milliseconds)))
    }

    @inline(__always)
    func event(_ i: Int) -> (token: UInt64, readiness: Readiness) {
        (events[i].data.u64, Readiness(rawValue: events[i].events))
    }
}

/// Raises the descriptor limit that forwarders inherit: to fs.nr_open (at most 2^20) when
/// allowed (root), else the soft limit to the hard one. 10,000 published ports need 10,000
/// listeners, and HAProxy refuses to start when it cannot get what its maxconn implies.
func raiseDescriptorLimit() {
    var limit = rlimit()
    getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    let ceiling = rlim_t(min(Int(ProcFS.read("/proc/sys/fs/nr_open")?.trimmingWhitespace() ?? "") ?? 0, 1 << 20))
    if ceiling > limit.rlim_max {
        var wanted = rlimit(rlim_cur: ceiling, rlim_max: ceiling)
        if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &wanted) == 0 { return }
    }
    limit.rlim_cur = limit.rlim_max
    setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
}
