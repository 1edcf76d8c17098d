// Socket calls. Every socket berth makes is non-blocking and close-on-exec.

import CBerthLinux
import Glibc
import SystemPackage

package enum ConnectResult: Sendable {
    case connected
    case inProgress
}

/// One wrapper per socket call, named after it.
package enum Socket {
    package static func make(family: Int32, type: Int32) throws(SyscallError) -> Descriptor {
        let flags = type | CBerthLinux_SOCK_NONBLOCK | CBerthLinux_SOCK_CLOEXEC
        return Descriptor(taking: try syscall("socket") { Glibc.socket(family, flags, 0) })
    }

    package static func setOption(
        _ fd: borrowing Descriptor,
        _ level: Int32,
        _ name: Int32,
        _ value: Int32
    ) throws(SyscallError) {
        let fd = fd.raw
        var v = value
        _ = try syscall("setsockopt") { setsockopt(fd, level, name, &v, socklen_t(MemoryLayout<Int32>.size)) }
    }

    package static func getOption(
        _ fd: borrowing Descriptor,
        _ level: Int32,
        _ name: Int32
    ) throws(SyscallError) -> Int32 {
        let fd = fd.raw
        var v: Int32 = 0
        var len = socklen_t(MemoryLayout<Int32>.size)
        _ = try syscall("getsockopt") { getsockopt(fd, level, name, &v, &len) }
        return v
    }

    package static func bind(_ fd: borrowing Descriptor, _ address: SocketAddress) throws(SyscallError) {
        let fd = fd.raw
        do {
            _ = try syscall("bind") { address.withSockAddr { Glibc.bind(fd, $0, $1) } }
        } catch {
            throw error.about(address.description)
        }
    }

    package static func listen(_ fd: borrowing Descriptor, backlog: Int32) throws(SyscallError) {
        let fd = fd.raw
        _ = try syscall("listen") { Glibc.listen(fd, backlog) }
    }

    package static func localAddress(_ fd: borrowing Descriptor) throws(SyscallError) -> SocketAddress {
        let fd = fd.raw
        var address = SocketAddress()
        _ = try syscall("getsockname") { address.withMutableSockAddr { getsockname(fd, $0, $1) } }
        return address
    }

    package static func peerAddress(_ fd: borrowing Descriptor) throws(SyscallError) -> SocketAddress {
        let fd = fd.raw
        var address = SocketAddress()
        _ = try syscall("getpeername") { address.withMutableSockAddr { getpeername(fd, $0, $1) } }
        return address
    }

    /// accept4 with SOCK_NONBLOCK | SOCK_CLOEXEC; the peer's address is not asked for.
    package static func accept(_ listener: borrowing Descriptor) throws(SyscallError) -> Descriptor? {
        let fd = listener.raw
        let flags = CBerthLinux_SOCK_NONBLOCK | CBerthLinux_SOCK_CLOEXEC
        switch try syscallNonBlocking("accept4", { CBerthLinux_accept4(fd, nil, nil, flags) }) {
        case .done(let client): return Descriptor(taking: client)
        case .wouldBlock: return nil
        }
    }

    /// Starts a connect on a non-blocking socket. Completion shows as writability; then ask `pendingError`.
    package static func connect(
        _ fd: borrowing Descriptor,
        _ address: SocketAddress
    ) throws(SyscallError) -> ConnectResult {
        let fd = fd.raw
        while true {
            let rc = address.withSockAddr { Glibc.connect(fd, $0, $1) }
            if rc == 0 { return .connected }
            let err = Glibc.errno
            if err == EINTR || err == EINPROGRESS { return .inProgress }
            throw SyscallError("connect", Errno(rawValue: err))
        }
    }

    /// SO_ERROR: the outcome of a non-blocking connect, or the error that woke us.
    package static func pendingError(_ fd: borrowing Descriptor) -> Errno? {
        let v = (try? getOption(fd, SOL_SOCKET, SO_ERROR)) ?? 0
        return v == 0 ? nil : Errno(rawValue: v)
    }

    /// recv(2) without blocking: bytes read (0: the peer's FIN), or `.wouldBlock`.
    @inline(__always)
    package static func receive(
        _ fd: borrowing Descriptor,
        into buffer: UnsafeMutableRawPointer,
        count: Int
    ) throws(SyscallError) -> IOResult<Int> {
        try receive(fd, into: buffer, count: count, flags: Int32(MSG_DONTWAIT))
    }

    /// `receive`, with the bytes left queued (MSG_PEEK). Its own function, not a flag with a
    /// default: a default argument of a package function is a call of its own from another module.
    package static func peek(
        _ fd: borrowing Descriptor,
        into buffer: UnsafeMutableRawPointer,
        count: Int
    ) throws(SyscallError) -> IOResult<Int> {
        try receive(fd, into: buffer, count: count, flags: Int32(MSG_DONTWAIT | MSG_PEEK))
    }

    @inline(__always)
    private static func receive(
        _ fd: borrowing Descriptor,
        into buffer: UnsafeMutableRawPointer,
        count: Int,
        flags: Int32
    ) throws(SyscallError) -> IOResult<Int> {
        let fd = fd.raw
        return try syscallNonBlocking("recv") { Glibc.recv(fd, buffer, count, flags) }
    }

    /// send(2) without blocking and without SIGPIPE: bytes the socket took, or `.wouldBlock`.
    @inline(__always)
    package static func send(
        _ fd: borrowing Descriptor,
        from buffer: UnsafeRawPointer,
        count: Int
    ) throws(SyscallError) -> IOResult<Int> {
        let fd = fd.raw
        return try syscallNonBlocking("send") { Glibc.send(fd, buffer, count, Int32(MSG_DONTWAIT | MSG_NOSIGNAL)) }
    }

    /// SO_RCVTIMEO and SO_SNDTIMEO: a blocking socket's calls give up after `seconds` with EAGAIN
    /// (for a unix socket, connect too).
    package static func setTimeouts(_ fd: borrowing Descriptor, seconds: Int) throws(SyscallError) {
        let fd = fd.raw
        var limit = timeval(tv_sec: seconds, tv_usec: 0)
        let size = socklen_t(MemoryLayout<timeval>.size)
        _ = try syscall("setsockopt") { setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, size) }
        _ = try syscall("setsockopt") { setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, size) }
    }

    /// send(2) on a blocking socket, without SIGPIPE: the bytes it took. EAGAIN is its timeout.
    package static func sendBlocking(
        _ fd: borrowing Descriptor,
        from buffer: UnsafeRawPointer,
        count: Int
    ) throws(SyscallError) -> Int {
        let fd = fd.raw
        return try syscall("send") { Glibc.send(fd, buffer, count, Int32(MSG_NOSIGNAL)) }
    }

    /// recv(2) on a blocking socket: the bytes read, 0 at the peer's FIN. EAGAIN is its timeout.
    package static func receiveBlocking(
        _ fd: borrowing Descriptor,
        into buffer: UnsafeMutableRawPointer,
        count: Int
    ) throws(SyscallError)
        -> Int
    {
        let fd = fd.raw
        return try syscall("recv") { Glibc.recv(fd, buffer, count, 0) }
    }

    /// Whether some socket holds `address` so that binding it would fail with EADDRINUSE: a
    /// listener (TCP; SO_REUSEADDR, so connections in TIME_WAIT do not count) or a bound UDP
    /// socket. `::` is probed as IPv6 only. Other bind errors (an address not on this host) throw.
    package static func portInUse(_ address: SocketAddress, udp: Bool) throws(SyscallError) -> Bool {
        let fd = try make(
            family: address.isV6 ? AF_INET6 : AF_INET,
            type: Int32(udp ? SOCK_DGRAM.rawValue : SOCK_STREAM.rawValue)
        )
        if !udp { try setOption(fd, SOL_SOCKET, SO_REUSEADDR, 1) }
        if address.isV6 { try setOption(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, 1) }
        do {
            try bind(fd, address)
            return false
        } catch  where error.errno == .addressInUse {
            return true
        }
    }

    /// SO_REUSEPORT: sockets of one process on one port, each with its own queue; the kernel
    /// spreads connections (and UDP clients) over them by a hash of their addresses.
    package static func setReusePort(_ fd: borrowing Descriptor) throws(SyscallError) {
        try setOption(fd, SOL_SOCKET, SO_REUSEPORT, 1)
    }

    package static func shutdownWrite(_ fd: borrowing Descriptor) {
        let fd = fd.raw
        // ENOTCONN when the peer is gone already: nothing left to tell it.
        _ = Glibc.shutdown(fd, Int32(SHUT_WR))
    }

    /// SO_LINGER {on, 0}: the close that follows sends RST instead of FIN.
    package static func setResetOnClose(_ fd: borrowing Descriptor) {
        let fd = fd.raw
        var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
        _ = setsockopt(fd, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
    }

    /// Waits until `fd` has something to read, at most `timeoutMs` (poll(2)): false on timeout.
    package static func waitReadable(_ fd: borrowing Descriptor, timeoutMs: Int32) throws(SyscallError) -> Bool {
        var pfd = pollfd(fd: fd.raw, events: Int16(POLLIN), revents: 0)
        return try syscall("poll") { poll(&pfd, 1, timeoutMs) } > 0
    }

    package static func setNoDelay(_ fd: borrowing Descriptor) {
        let fd = fd.raw
        var one: Int32 = 1
        _ = setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
    }

    /// Makes a descriptor we were handed (fd 4 from dockerd) non-blocking and close-on-exec.
    package static func makeNonBlocking(_ fd: borrowing Descriptor) throws(SyscallError) {
        let fd = fd.raw
        let flags = try syscall("fcntl") { fcntl(fd, F_GETFL) }
        _ = try syscall("fcntl") { fcntl(fd, F_SETFL, flags | CBerthLinux_O_NONBLOCK) }
        _ = try syscall("fcntl") { fcntl(fd, F_SETFD, FD_CLOEXEC) }
    }

    package static func type(_ fd: borrowing Descriptor) throws(SyscallError) -> Int32 {
        try getOption(fd, SOL_SOCKET, SO_TYPE)
    }
}

extension Socket {
    /// A non-blocking, close-on-exec unix datagram socket connected to `path` (`/dev/log`).
    package static func connectUnixDatagram(_ path: String) throws(SyscallError) -> Descriptor {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard !bytes.isEmpty, bytes.count < capacity else {
            throw SyscallError("connect", .fileNameTooLong, subject: path)
        }
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: bytes) }
        let socket = try make(family: AF_UNIX, type: Int32(SOCK_DGRAM.rawValue))
        let length = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count + 1)
        do {
            _ = try syscall("connect") {
                withUnsafePointer(to: &address) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(socket.raw, $0, length) }
                }
            }
        } catch {
            throw error.about(path)
        }
        return socket
    }

    /// IPV6_V6ONLY of an IPv6 socket: false for a dual-stack `::` socket, which also takes IPv4.
    package static func isV6Only(_ fd: borrowing Descriptor) throws(SyscallError) -> Bool {
        try getOption(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY) != 0
    }

    /// SO_ACCEPTCONN: whether listen(2) was called on it.
    package static func isListening(_ fd: borrowing Descriptor) throws(SyscallError) -> Bool {
        try getOption(fd, SOL_SOCKET, SO_ACCEPTCONN) != 0
    }
}
