// Load generators: each runs on the calling thread (one thread per figure, so on two cores
// the generator, the forwarder and the backend each get about one), with non-blocking
// sockets and epoll where several connections are in flight, and allocates nothing per
// request once started. Sockets are made in the client's namespace.

import CBench
import Glibc
import Histogram
import LinuxIO
import Synchronization

/// A latency histogram in nanoseconds, 1 µs .. 10 s, 3 significant digits.
func makeHistogram() -> Histogram<UInt64> {
    Histogram<UInt64>(
        lowestDiscernibleValue: 1_000,
        highestTrackableValue: 10_000_000_000,
        numberOfSignificantValueDigits: .three
    )
}

struct LatencyResult {
    var histogram: Histogram<UInt64>
    var completed: Int
    var errors: Int
    var seconds: Double
    var perSecond: Double { Double(completed) / seconds }
}

enum Load {
    // MARK: bulk

    /// `streams` TCP connections sending as fast as they can for `seconds`; then each shuts
    /// down its write side and waits for the sink's close, so every byte counted got through.
    /// Returns bits per second and the bytes sent.
    static func bulk(
        to address: SocketAddress,
        streams: Int,
        seconds: Double,
        ns: String?
    ) throws -> (bitsPerSecond: Double, bytes: UInt64) {
        var fds: [Int32] = []
        defer { for fd in fds { close(fd) } }
        for _ in 0..<streams {
            fds.append(try Net.connect(address, type: Net.tcp, ns: ns))
        }
        let poller = try Poller(capacity: 64)
        for (i, fd) in fds.enumerated() {
            _ = try check(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | CBench_O_NONBLOCK), "fcntl")
            try poller.add(fd, .write, token: UInt64(i))
        }
        let chunk = 1 << 18
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunk, alignment: 64)
        defer { buffer.deallocate() }
        buffer.initializeMemory(as: UInt8.self, repeating: 0x5A)
        var sent: UInt64 = 0
        let start = nowNanos()
        let end = start + UInt64(seconds * 1e9)
        var now = start
        while now < end {
            let n = poller.wait(milliseconds: 100)
            for k in 0..<n {
                let fd = fds[Int(poller.event(k).token)]
                while true {
                    let s = send(fd, buffer.baseAddress, chunk, Int32(MSG_NOSIGNAL | MSG_DONTWAIT))
                    if s > 0 {
                        sent &+= UInt64(s)
                        continue
                    }
                    if s < 0 && (errno == EAGAIN || errno == EINTR) { break }
                    throw BenchError("bulk send: \(errnoText())")
                }
            }
            now = nowNanos()
        }
        // Drain: every stream's EOF must reach the sink, which then closes.
        for fd in fds { shutdown(fd, Int32(SHUT_WR)) }
        var scratch: UInt8 = 0
        for fd in fds {
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~CBench_O_NONBLOCK)
            Net.setReceiveTimeout(fd, milliseconds: 30_000)
            if recv(fd, &scratch, 1, 0) != 0 { throw BenchError("bulk: the sink did not close: \(errnoText())") }
        }
        let elapsed = Double(nowNanos() - start) / 1e9
        return (Double(sent) * 8 / elapsed, sent)
    }

    // MARK: connection rate

    private enum ConnState: UInt8 { case idle, connecting, waiting }

    /// New connections per second: each connects, sends one 64-byte request, reads the
    /// response and closes; `concurrency` of them at a time, for `seconds`.
    static func connectionRate(
        to address: SocketAddress,
        concurrency: Int,
        seconds: Double,
        ns: String?
    ) throws -> (perSecond: Double, errors: Int, completed: Int) {
        let poller = try Poller(capacity: concurrency * 2)
        var fds = [Int32](repeating: -1, count: concurrency)
        var states = [ConnState](repeating: .idle, count: concurrency)
        var got = [Int](repeating: 0, count: concurrency)
        let request = UnsafeMutableRawBufferPointer.allocate(byteCount: messageSize, alignment: 64)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 64)
        request.initializeMemory(as: UInt8.self, repeating: 0x61)
        defer {
            for fd in fds where fd >= 0 { close(fd) }
            request.deallocate()
            buffer.deallocate()
        }
        // Client sockets come from the client's namespace: a pool made up front, refilled in batches.
        var spare: [Int32] = []
        func refill() throws {
            spare += try Net.inside(ns) {
                var made: [Int32] = []
                for _ in 0..<256 { made.append(try Net.socket(address.family, Net.tcp, nonBlocking: true)) }
                return made
            }
        }
        defer { for fd in spare { close(fd) } }
        try refill()
        var completed = 0
        var errors = 0
        func start(_ i: Int) throws {
            if spare.isEmpty { try refill() }
            let fd = spare.removeLast()
            Net.noDelay(fd)
            fds[i] = fd
            got[i] = 0
            let rc = address.withSockAddr { Glibc.connect(fd, $0, $1) }
            if rc != 0 && errno != EINPROGRESS {
                errors += 1
                close(fd)
                fds[i] = -1
                states[i] = .idle
                return
            }
            states[i] = .connecting
            try poller.add(fd, .write, token: UInt64(i))
        }
        func finish(_ i: Int, ok: Bool) {
            poller.remove(fds[i])
            if !ok { Net.setLinger0(fds[i]) }
            close(fds[i])
            fds[i] = -1
            states[i] = .idle
            if ok { completed += 1 } else { errors += 1 }
        }
        let begin = nowNanos()
        let end = begin + UInt64(seconds * 1e9)
        for i in 0..<concurrency { try start(i) }
        var now = begin
        while now < end {
            let n = poller.wait(milliseconds: 100)
            for k in 0..<n {
                let (token, readiness) = poller.event(k)
                let i = Int(token)
                let fd = fds[i]
                guard fd >= 0 else { continue }
                switch states[i] {
                case .connecting:
                    if readiness.error || pendingError(fd) != 0 {
                        finish(i, ok: false)
                        continue
                    }
                    if send(fd, request.baseAddress, messageSize, Int32(MSG_NOSIGNAL)) != messageSize {
                        finish(i, ok: false)
                        continue
                    }
                    states[i] = .waiting
                    try poller.modify(fd, .read, token: token)
                case .waiting:
                    let r = recv(fd, buffer.baseAddress, buffer.count, Int32(MSG_DONTWAIT))
                    if r > 0 {
                        got[i] += r
                        if got[i] >= messageSize { finish(i, ok: true) }
                    } else if r == 0 || (errno != EAGAIN && errno != EINTR) {
                        finish(i, ok: false)
                    }
                case .idle:
                    break
                }
            }
            now = nowNanos()
            if now < end {
                for i in 0..<concurrency where states[i] == .idle { try start(i) }
            }
        }
        let elapsed = Double(nowNanos() - begin) / 1e9
        return (Double(completed) / elapsed, errors, completed)
    }

    // MARK: request/response

    /// Keep-alive request/response over `connections` TCP connections, one request in
    /// flight on each: latency of every request, and requests per second.
    static func requestResponse(
        to address: SocketAddress,
        connections: Int,
        seconds: Double,
        ns: String?
    ) throws -> LatencyResult {
        var fds: [Int32] = []
        defer { for fd in fds { close(fd) } }
        for _ in 0..<connections { fds.append(try Net.connect(address, type: Net.tcp, ns: ns)) }
        var histogram = makeHistogram()
        let request = UnsafeMutableRawBufferPointer.allocate(byteCount: messageSize, alignment: 64)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 64)
        request.initializeMemory(as: UInt8.self, repeating: 0x61)
        defer {
            request.deallocate()
            buffer.deallocate()
        }
        var completed = 0
        var errors = 0
        let begin = nowNanos()
        let end = begin + UInt64(seconds * 1e9)
        if connections == 1 {
            // One connection: plain blocking calls, the least a client can add.
            let fd = fds[0]
            Net.setReceiveTimeout(fd, milliseconds: 2000)
            var now = begin
            while now < end {
                let t0 = now
                guard send(fd, request.baseAddress, messageSize, Int32(MSG_NOSIGNAL)) == messageSize,
                    Net.readFull(fd, buffer.baseAddress!, messageSize)
                else {
                    errors += 1
                    break
                }
                now = nowNanos()
                histogram.record(now - t0)
                completed += 1
            }
        } else {
            let poller = try Poller(capacity: connections)
            var sentAt = [UInt64](repeating: 0, count: connections)
            var got = [Int](repeating: 0, count: connections)
            for (i, fd) in fds.enumerated() {
                _ = try check(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | CBench_O_NONBLOCK), "fcntl")
                try poller.add(fd, .read, token: UInt64(i))
                sentAt[i] = nowNanos()
                guard send(fd, request.baseAddress, messageSize, Int32(MSG_NOSIGNAL)) == messageSize else {
                    throw BenchError("request/response: send: \(errnoText())")
                }
            }
            var now = begin
            var lastProgress = begin
            while now < end {
                let n = poller.wait(milliseconds: 100)
                now = nowNanos()
                for k in 0..<n {
                    let i = Int(poller.event(k).token)
                    let fd = fds[i]
                    let r = recv(fd, buffer.baseAddress, buffer.count, Int32(MSG_DONTWAIT))
                    if r > 0 {
                        got[i] += r
                        while got[i] >= messageSize {
                            got[i] -= messageSize
                            histogram.record(now - sentAt[i])
                            completed += 1
                            lastProgress = now
                            sentAt[i] = now
                            if send(fd, request.baseAddress, messageSize, Int32(MSG_NOSIGNAL)) != messageSize {
                                errors += 1
                            }
                        }
                    } else if r == 0 || (errno != EAGAIN && errno != EINTR) {
                        errors += 1
                        poller.remove(fd)
                    }
                }
                if now - lastProgress > 2_000_000_000 { throw BenchError("request/response: no response for 2 s") }
            }
        }
        return LatencyResult(
            histogram: histogram,
            completed: completed,
            errors: errors,
            seconds: Double(nowNanos() - begin) / 1e9
        )
    }

    // MARK: UDP

    /// 64-byte datagrams from one socket as fast as sendmmsg goes, for `seconds`.
    /// Returns how many were sent; the sink counts what arrived.
    static func udpFlood(
        to address: SocketAddress,
        seconds: Double,
        ns: String?
    ) throws -> (sent: UInt64, seconds: Double) {
        let fd = try Net.connect(address, type: Net.udp, ns: ns)
        defer { close(fd) }
        Net.setInt(fd, SOL_SOCKET, SO_SNDBUFFORCE, 4 << 20)
        let batch = 64
        let payload = UnsafeMutableRawBufferPointer.allocate(byteCount: messageSize, alignment: 64)
        payload.initializeMemory(as: UInt8.self, repeating: 0x75)
        let iov = UnsafeMutablePointer<iovec>.allocate(capacity: 1)
        iov.pointee = iovec(iov_base: payload.baseAddress, iov_len: messageSize)
        let messages = UnsafeMutablePointer<CBench_mmsghdr>.allocate(capacity: batch)
        defer {
            payload.deallocate()
            iov.deallocate()
            messages.deallocate()
        }
        for i in 0..<batch {
            var m = CBench_mmsghdr()
            m.msg_hdr.msg_iov = iov
            m.msg_hdr.msg_iovlen = 1
            messages[i] = m
        }
        var sent: UInt64 = 0
        let begin = nowNanos()
        let end = begin + UInt64(seconds * 1e9)
        var now = begin
        while now < end {
            let n = CBench_sendmmsg(fd, messages, UInt32(batch), 0)
            if n > 0 {
                sent &+= UInt64(n)
            } else if errno != EINTR && errno != ENOBUFS && errno != EAGAIN && errno != ECONNREFUSED {
                throw BenchError("udp sendmmsg: \(errnoText())")
            }
            now = nowNanos()
        }
        return (sent, Double(now - begin) / 1e9)
    }

    /// One UDP flow, one 64-byte datagram in flight: round-trip latency; a reply missing
    /// after 200 ms counts as lost.
    static func udpRequestResponse(to address: SocketAddress, seconds: Double, ns: String?) throws -> LatencyResult {
        let fd = try Net.connect(address, type: Net.udp, ns: ns)
        defer { close(fd) }
        Net.setReceiveTimeout(fd, milliseconds: 200)
        var histogram = makeHistogram()
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 2048, alignment: 64)
        buffer.initializeMemory(as: UInt8.self, repeating: 0x75)
        defer { buffer.deallocate() }
        var completed = 0
        var lost = 0
        let begin = nowNanos()
        let end = begin + UInt64(seconds * 1e9)
        var now = begin
        while now < end {
            let t0 = now
            // A sequence number, so a late reply to a lost request is not taken for this one.
            buffer.storeBytes(of: UInt64(completed + lost), as: UInt64.self)
            let seq = UInt64(completed + lost)
            if send(fd, buffer.baseAddress, messageSize, 0) != messageSize {
                lost += 1
                if errno == ECONNREFUSED { sleepSeconds(0.01) }
                now = nowNanos()
                continue
            }
            var answered = false
            while true {
                let r = recv(fd, buffer.baseAddress, buffer.count, 0)
                if r < 0 { break }
                if r >= 8 && buffer.load(as: UInt64.self) == seq {
                    answered = true
                    break
                }
            }
            now = nowNanos()
            if answered {
                histogram.record(now - t0)
                completed += 1
            } else {
                lost += 1
            }
            if lost > 50 && completed == 0 { break }
        }
        return LatencyResult(
            histogram: histogram,
            completed: completed,
            errors: lost,
            seconds: Double(nowNanos() - begin) / 1e9
        )
    }

    // MARK: fairness

    /// tcp-fair: a 1-byte ping-pong on one connection to the fair backend, a ping every
    /// `pingInterval` (an interactive session, not a flood), for `seconds`; beside `streams`
    /// downloads through `bulkAddress` (another port of the same forwarder) that read as fast as
    /// they can (recv with MSG_TRUNC: no copy), started and flowing before the first ping.
    /// Returns the ping's latency and the downloads' bits per second (0 without bulk).
    static func fairness(
        to address: SocketAddress,
        bulkAddress: SocketAddress,
        streams: Int,
        seconds: Double,
        ns: String?
    ) throws -> (latency: LatencyResult, bulkBitsPerSecond: Double) {
        let download = Download()
        var readers: [LoopThread] = []
        var bulkFDs: [Int32] = []
        defer {
            download.stop.store(true, ordering: .relaxed)
            for r in readers { r.join() }
            for fd in bulkFDs { close(fd) }
        }
        let bulk = streams > 0
        for _ in 0..<streams {
            let fd = try Net.connect(bulkAddress, type: Net.tcp, ns: ns)
            bulkFDs.append(fd)
            var role = UInt8(ascii: "b")
            guard send(fd, &role, 1, Int32(MSG_NOSIGNAL)) == 1 else {
                throw BenchError("fair bulk: send: \(errnoText())")
            }
            Net.setReceiveTimeout(fd, milliseconds: 100)
            let reader = try LoopThread(name: "bench-download") { [download] in
                while !download.stop.load(ordering: .relaxed) {
                    let got = recv(fd, nil, 1 << 22, Int32(MSG_TRUNC))
                    if got > 0 {
                        download.received.add(UInt64(got), ordering: .relaxed)
                    } else if got == 0 || (errno != EAGAIN && errno != EINTR) {
                        return
                    }
                }
            }
            readers.append(reader)
        }
        if bulk {
            let deadline = nowNanos() + 5_000_000_000
            while download.received.load(ordering: .relaxed) < UInt64(streams) << 20 {
                if nowNanos() > deadline { throw BenchError("fair: the bulk download did not start within 5 s") }
                sleepSeconds(0.001)
            }
        }
        let fd = try Net.connect(address, type: Net.tcp, ns: ns)
        defer { close(fd) }
        Net.setReceiveTimeout(fd, milliseconds: 2000)
        var histogram = makeHistogram()
        var completed = 0
        var errors = 0
        var ping = UInt8(ascii: "p")
        var pong: UInt8 = 0
        let bytesBefore = download.received.load(ordering: .relaxed)
        let begin = nowNanos()
        let end = begin + UInt64(seconds * 1e9)
        var now = begin
        while now < end {
            let t0 = now
            guard send(fd, &ping, 1, Int32(MSG_NOSIGNAL)) == 1, Net.readFull(fd, &pong, 1) else {
                errors += 1
                break
            }
            now = nowNanos()
            histogram.record(now - t0)
            completed += 1
            let next = t0 + pingInterval
            if now < next {
                sleepSeconds(Double(next - now) / 1e9)
                now = nowNanos()
            }
        }
        let elapsed = Double(nowNanos() - begin) / 1e9
        let bytes = download.received.load(ordering: .relaxed) - bytesBefore
        if bulk && bytes == 0 { throw BenchError("fair: the bulk download stalled") }
        return (
            LatencyResult(histogram: histogram, completed: completed, errors: errors, seconds: elapsed),
            bulk ? Double(bytes) * 8 / elapsed : 0
        )
    }

    /// tcp-fair's download, shared with its reader thread.
    private final class Download: Sendable {
        let stop = Atomic<Bool>(false)
        let received = Atomic<UInt64>(0)
    }

    /// How often tcp-fair's ping goes out (nanoseconds).
    static let pingInterval: UInt64 = 1_000_000

    // MARK: held connections

    /// Opens `count` connections and makes each carry one request and response, so the
    /// forwarder has connected all of them through; the caller closes them.
    static func hold(_ count: Int, to address: SocketAddress, ns: String?) throws -> [Int32] {
        var fds: [Int32] = []
        var request = [UInt8](repeating: 0x61, count: messageSize)
        var response = [UInt8](repeating: 0, count: messageSize)
        do {
            for _ in 0..<count {
                let fd = try Net.connect(address, type: Net.tcp, ns: ns)
                fds.append(fd)
                Net.setReceiveTimeout(fd, milliseconds: 5000)
                guard send(fd, &request, messageSize, Int32(MSG_NOSIGNAL)) == messageSize,
                    Net.readFull(fd, &response, messageSize)
                else { throw BenchError("held connection \(fds.count): no response") }
            }
        } catch {
            for fd in fds { close(fd) }
            throw error
        }
        return fds
    }
}

extension Net {
    static func setLinger0(_ fd: Int32) {
        var l = linger(l_onoff: 1, l_linger: 0)
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, socklen_t(MemoryLayout<linger>.size))
    }
}
