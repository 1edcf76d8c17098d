// The "container" side of every figure: servers in the runner's own process, each on one
// thread, lean enough that the forwarder, not they, sets the pace (`direct` measures them
// without a forwarder: the ceiling).
//
// - sink: accepts TCP connections and discards what arrives (recv with MSG_TRUNC: no copy);
//   closes on EOF, which tells a bulk sender that every byte got through.
// - echo: fixed-size request/response over TCP: for every whole 64-byte request on a
//   connection it writes a 64-byte response; closes on EOF. Keep-alive and
//   connection-per-request load both use it.
// - udp sink: counts 64-byte datagrams (recvmmsg).
// - udp echo: sends every datagram back to where it came from (recvmmsg/sendmmsg).
// - fair: one port, two roles, for tcp-fair. A connection whose first byte is `b` is a bulk
//   download: 1 MiB chunks as fast as the client reads them. Any other is a byte echo (the
//   ping; its first byte is echoed too). Each connection gets a blocking thread of its own,
//   so the bulk source never delays the echo here: what delays the ping is the forwarder.

import CBench
import Glibc
import LinuxIO
import Synchronization

let messageSize = 64

final class Backends: @unchecked Sendable {
    let sink: SocketAddress
    let echo: SocketAddress
    let udpSink: SocketAddress
    let udpEcho: SocketAddress
    let fair: SocketAddress
    private let fds: [Int32]
    private let stopFlag = Atomic<Bool>(false)
    private let udpReceived = Atomic<UInt64>(0)
    private var threads: [LoopThread] = []

    /// Servers on `ip` (ports the kernel picks) inside namespace `ns`.
    init(ip: String, ns: String?) throws {
        let any = SocketAddress(ip: ip, port: 0)!
        let s = try Net.serve(any, type: Net.tcp, ns: ns, nonBlocking: true)
        let e = try Net.serve(any, type: Net.tcp, ns: ns, nonBlocking: true)
        let us = try Net.serve(any, type: Net.udp, ns: ns, nonBlocking: false)
        let ue = try Net.serve(any, type: Net.udp, ns: ns, nonBlocking: false)
        let fa = try Net.serve(any, type: Net.tcp, ns: ns, nonBlocking: false)
        sink = s.address
        echo = e.address
        udpSink = us.address
        udpEcho = ue.address
        fair = fa.address
        fds = [s.fd, e.fd, us.fd, ue.fd, fa.fd]
        for fd in [us.fd, ue.fd, fa.fd] { Net.setReceiveTimeout(fd, milliseconds: 100) }
        threads.append(try LoopThread(name: "backend-sink") { [self] in tcpServer(listener: s.fd, echo: false) })
        threads.append(try LoopThread(name: "backend-echo") { [self] in tcpServer(listener: e.fd, echo: true) })
        threads.append(try LoopThread(name: "backend-usink") { [self] in udpServer(us.fd, echo: false) })
        threads.append(try LoopThread(name: "backend-uecho") { [self] in udpServer(ue.fd, echo: true) })
        threads.append(try LoopThread(name: "backend-fair") { [self] in fairServer(listener: fa.fd) })
    }

    func stop() {
        stopFlag.store(true, ordering: .releasing)
        for t in threads { t.join() }
        threads.removeAll()
        for fd in fds { close(fd) }
    }

    var udpSinkCount: UInt64 { udpReceived.load(ordering: .acquiring) }

    private var stopped: Bool { stopFlag.load(ordering: .relaxed) }

    // MARK: TCP

    private struct Conn {
        var fd: Int32 = -1
        var pending = 0  // bytes of a partial request
    }

    private func tcpServer(listener: Int32, echo: Bool) {
        guard let poller = try? Poller(capacity: 512) else { return }
        let listenerToken = UInt64.max
        try? poller.add(listener, .read, token: listenerToken)
        var conns: [Conn] = []
        var free: [Int] = []
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 16, alignment: 64)
        let responses = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 16, alignment: 64)
        responses.initializeMemory(as: UInt8.self, repeating: 0x42)
        defer {
            for c in conns where c.fd >= 0 { close(c.fd) }
            buffer.deallocate()
            responses.deallocate()
        }
        func drop(_ i: Int) {
            close(conns[i].fd)
            conns[i].fd = -1
            free.append(i)
        }
        while !stopped {
            let n = poller.wait(milliseconds: 100)
            for k in 0..<n {
                let (token, _) = poller.event(k)
                if token == listenerToken {
                    for _ in 0..<64 {
                        let fd = accept4Nonblocking(listener)
                        if fd < 0 { break }
                        Net.noDelay(fd)
                        let slot: Int
                        if let f = free.popLast() {
                            slot = f
                            conns[slot] = Conn(fd: fd)
                        } else {
                            slot = conns.count
                            conns.append(Conn(fd: fd))
                        }
                        if (try? poller.add(fd, .read, token: UInt64(slot))) == nil { drop(slot) }
                    }
                    continue
                }
                let i = Int(token)
                guard i < conns.count, conns[i].fd >= 0 else { continue }
                let fd = conns[i].fd
                if !echo {
                    // Discard without copying; EOF closes, which the sender waits for.
                    while true {
                        let got = recv(fd, nil, 1 << 22, Int32(MSG_TRUNC | MSG_DONTWAIT))
                        if got > 0 { continue }
                        if got < 0 && (errno == EAGAIN || errno == EINTR) { break }
                        drop(i)
                        break
                    }
                    continue
                }
                var closed = false
                while true {
                    let got = recv(fd, buffer.baseAddress, buffer.count, Int32(MSG_DONTWAIT))
                    if got > 0 {
                        let total = conns[i].pending + got
                        let requests = total / messageSize
                        conns[i].pending = total % messageSize
                        var left = requests * messageSize
                        while left > 0 {
                            let sent = send(fd, responses.baseAddress, min(left, responses.count), Int32(MSG_NOSIGNAL))
                            if sent <= 0 { break }
                            left -= sent
                        }
                        if got < buffer.count { break }
                        continue
                    }
                    if got < 0 && (errno == EAGAIN || errno == EINTR) { break }
                    closed = true
                    break
                }
                if closed { drop(i) }
            }
        }
    }

    // MARK: fair (bulk source and byte echo on one port)

    /// Accepts (the listener times out every 100 ms to see `stop`), reads the role byte and
    /// hands the connection to a thread of its own; joins them all once stopped (each sees
    /// `stop` within 100 ms).
    private func fairServer(listener: Int32) {
        var connections: [LoopThread] = []
        defer { for t in connections { t.join() } }
        while !stopped {
            let fd = accept(listener, nil, nil)  // SO_RCVTIMEO bounds the wait
            if fd < 0 { continue }
            Net.noDelay(fd)
            Net.setReceiveTimeout(fd, milliseconds: 100)
            var role: UInt8 = 0
            var got = -1
            for _ in 0..<50 where !stopped {  // 5 s for the first byte
                got = recv(fd, &role, 1, 0)
                if got >= 0 || (errno != EAGAIN && errno != EINTR) { break }
            }
            guard got == 1 else {
                close(fd)
                continue
            }
            let first = role
            let bulk = first == UInt8(ascii: "b")
            do {
                let t = try LoopThread(name: bulk ? "backend-source" : "backend-ping") { [self] in
                    if bulk { fairSource(fd) } else { fairEcho(fd, first: first) }
                    close(fd)
                }
                connections.append(t)
            } catch {
                close(fd)
            }
        }
    }

    /// 1 MiB chunks as fast as the client reads, until it closes (or the backends stop).
    private func fairSource(_ fd: Int32) {
        let chunk = 1 << 20
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunk, alignment: 64)
        defer { buffer.deallocate() }
        buffer.initializeMemory(as: UInt8.self, repeating: 0x62)
        var tv = timeval(tv_sec: 0, tv_usec: 100_000)
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        while !stopped {
            let s = send(fd, buffer.baseAddress, chunk, Int32(MSG_NOSIGNAL))
            if s > 0 || (s < 0 && (errno == EAGAIN || errno == EINTR)) { continue }
            return
        }
    }

    /// Every byte back as it comes, the role byte first.
    private func fairEcho(_ fd: Int32, first: UInt8) {
        var byte = first
        guard send(fd, &byte, 1, Int32(MSG_NOSIGNAL)) == 1 else { return }
        var buffer = [UInt8](repeating: 0, count: 4096)
        while !stopped {
            let got = recv(fd, &buffer, buffer.count, 0)
            if got > 0 {
                guard send(fd, buffer, got, Int32(MSG_NOSIGNAL)) == got else { return }
                continue
            }
            if got < 0 && (errno == EAGAIN || errno == EINTR) { continue }
            return
        }
    }

    // MARK: UDP

    private func udpServer(_ fd: Int32, echo: Bool) {
        let batch = 64
        let buffers = UnsafeMutableRawBufferPointer.allocate(byteCount: batch * 2048, alignment: 64)
        let addresses = UnsafeMutablePointer<sockaddr_storage>.allocate(capacity: batch)
        let iovecs = UnsafeMutablePointer<iovec>.allocate(capacity: batch)
        let messages = UnsafeMutablePointer<CBench_mmsghdr>.allocate(capacity: batch)
        defer {
            buffers.deallocate()
            addresses.deallocate()
            iovecs.deallocate()
            messages.deallocate()
        }
        for i in 0..<batch {
            iovecs[i] = iovec(iov_base: buffers.baseAddress! + i * 2048, iov_len: 2048)
        }
        func reset(_ i: Int) {
            var m = CBench_mmsghdr()
            m.msg_hdr.msg_name = UnsafeMutableRawPointer(addresses + i)
            m.msg_hdr.msg_namelen = socklen_t(MemoryLayout<sockaddr_storage>.size)
            m.msg_hdr.msg_iov = iovecs + i
            m.msg_hdr.msg_iovlen = 1
            messages[i] = m
        }
        while !stopped {
            for i in 0..<batch { reset(i) }
            let n = CBench_recvmmsg(fd, messages, UInt32(batch), CBench_MSG_WAITFORONE)
            if n <= 0 { continue }
            if !echo {
                udpReceived.add(UInt64(n), ordering: .relaxed)
                continue
            }
            for i in 0..<Int(n) {
                iovecs[i].iov_len = Int(messages[i].msg_len)
            }
            var sent = 0
            while sent < Int(n) {
                let s = CBench_sendmmsg(fd, messages + sent, UInt32(Int(n) - sent), 0)
                if s <= 0 { break }
                sent += Int(s)
            }
            for i in 0..<Int(n) { iovecs[i].iov_len = 2048 }
        }
    }
}

@inline(__always)
func accept4Nonblocking(_ listener: Int32) -> Int32 {
    CBench_accept_nonblocking(listener)
}
