// Unix stream sockets for berth's control API: the daemon's listener, the client's connection,
// and who the peer is (SO_PEERCRED).

import CBerthLinux
import Glibc

package enum UnixSocket {
    /// The peer of a connected unix socket, as the kernel vouches for it.
    package struct Credentials: Sendable, Equatable {
        package let pid: Int32
        package let uid: UInt32
        package let gid: UInt32
    }

    private static func address(_ path: String) throws(SyscallError) -> sockaddr_un {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        let room = MemoryLayout.size(ofValue: address.sun_path)
        guard !bytes.isEmpty, bytes.count < room else { throw SyscallError("bind", .fileNameTooLong, subject: path) }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (i, b) in bytes.enumerated() { raw[i] = b }
            raw[bytes.count] = 0
        }
        return address
    }

    private static func withAddress<R>(
        _ path: String,
        _ body: (UnsafePointer<sockaddr>, socklen_t) -> R
    ) throws(SyscallError) -> R {
        var a = try address(path)
        return withUnsafePointer(to: &a) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
    }

    /// Binds and listens on `path` (which must not exist), non-blocking and close-on-exec. The
    /// socket file is made with `mode` (the umask is set around bind(2)): no chmod by path, which
    /// would follow a link put there meanwhile.
    package static func listen(
        path: String,
        mode: mode_t = 0o660,
        backlog: Int32 = 128
    ) throws(SyscallError) -> Descriptor {
        let socket = try Socket.make(family: AF_UNIX, type: Int32(SOCK_STREAM.rawValue))
        let old = umask(~mode & 0o777)
        let rc = try withAddress(path) { Glibc.bind(socket.raw, $0, $1) }
        let bindErrno = errno
        umask(old)
        if rc != 0 { throw SyscallError("bind", .init(rawValue: bindErrno), subject: path) }
        try Socket.listen(socket, backlog: backlog)
        return socket
    }

    /// What a connect to `path` finds.
    package enum Probe: Sendable, Equatable {
        /// Something accepted the connection (or queued it).
        case answers
        /// Something listens, but its queue stayed full for the whole timeout.
        case silent
        /// Nothing listens (ECONNREFUSED): a socket file left by a process that is gone.
        case stale
    }

    /// Connects to `path` and hangs up, waiting at most `timeoutSeconds`.
    package static func probe(path: String, timeoutSeconds: Int = 1) throws(SyscallError) -> Probe {
        do {
            _ = try connect(path: path, timeoutSeconds: timeoutSeconds)
            return .answers
        } catch {
            switch error.errno {
            case .connectionRefused: return .stale
            case .resourceTemporarilyUnavailable, .timedOut: return .silent
            default: throw error
            }
        }
    }

    /// Connects to `path`, blocking (a client's call), close-on-exec. With `timeoutSeconds` the
    /// connect and every later send and recv give up after that long (EAGAIN).
    package static func connect(path: String, timeoutSeconds: Int? = nil) throws(SyscallError) -> Descriptor {
        let socket = Descriptor(
            taking: try syscall("socket") {
                Glibc.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | CBerthLinux_SOCK_CLOEXEC, 0)
            }
        )
        if let timeoutSeconds { try Socket.setTimeouts(socket, seconds: timeoutSeconds) }
        while true {
            let rc = try withAddress(path) { Glibc.connect(socket.raw, $0, $1) }
            if rc == 0 { return socket }
            if errno == EINTR { continue }
            throw SyscallError("connect", .init(rawValue: errno), subject: path)
        }
    }

    /// recv(2) that also takes a descriptor passed with the bytes (SCM_RIGHTS): `passed` gets
    /// the first one, to own; any others in the same message are closed here (and the kernel
    /// closes those that did not fit). Without blocking.
    package static func receive(
        _ fd: borrowing Descriptor,
        into buffer: UnsafeMutableRawPointer,
        count: Int,
        passed: (consuming Descriptor) -> Void
    ) throws(SyscallError) -> IOResult<Int> {
        let fd = fd.raw
        let space = CBerthLinux_CMSG_SPACE(MemoryLayout<Int32>.size * 4)
        let control = UnsafeMutableRawPointer.allocate(byteCount: space, alignment: 8)
        defer { control.deallocate() }
        var vector = iovec(iov_base: buffer, iov_len: count)
        var header = msghdr()
        let result: IOResult<Int> = try withUnsafeMutablePointer(to: &vector) { (v) throws(SyscallError) in
            header.msg_iov = v
            header.msg_iovlen = 1
            header.msg_control = control
            header.msg_controllen = space
            return try syscallNonBlocking("recvmsg") {
                recvmsg(fd, &header, Int32(MSG_DONTWAIT) | CBerthLinux_MSG_CMSG_CLOEXEC)
            }
        }
        guard case .done = result else { return result }
        var first = true
        var message = CBerthLinux_CMSG_FIRSTHDR(&header)
        while let cmsg = message {
            if cmsg.pointee.cmsg_level == SOL_SOCKET && cmsg.pointee.cmsg_type == SCM_RIGHTS,
                let data = UnsafeRawPointer(CBerthLinux_CMSG_DATA(cmsg))
            {
                let bytes = Int(cmsg.pointee.cmsg_len) - CBerthLinux_CMSG_LEN(0)
                for i in 0..<max(0, bytes / MemoryLayout<Int32>.size) {
                    let received = Descriptor(taking: data.loadUnaligned(fromByteOffset: i * 4, as: Int32.self))
                    if first {
                        first = false
                        passed(received)
                    }
                }
            }
            message = CBerthLinux_CMSG_NXTHDR(&header, cmsg)
        }
        return result
    }

    /// Sends `count` bytes with `descriptors` attached (SCM_RIGHTS): the receiver gets its own
    /// copies. Blocking unless the socket is not; without SIGPIPE.
    package static func send(
        _ fd: borrowing Descriptor,
        from buffer: UnsafeRawPointer,
        count: Int,
        passing descriptors: [Int32]
    ) throws(SyscallError) -> Int {
        let fd = fd.raw
        let size = MemoryLayout<Int32>.size * descriptors.count
        let space = CBerthLinux_CMSG_SPACE(size)
        let control = UnsafeMutableRawPointer.allocate(byteCount: space, alignment: 8)
        defer { control.deallocate() }
        control.initializeMemory(as: UInt8.self, repeating: 0, count: space)
        var vector = iovec(iov_base: UnsafeMutableRawPointer(mutating: buffer), iov_len: count)
        var header = msghdr()
        return try withUnsafeMutablePointer(to: &vector) { (v) throws(SyscallError) in
            header.msg_iov = v
            header.msg_iovlen = 1
            header.msg_control = control
            header.msg_controllen = space
            if let cmsg = CBerthLinux_CMSG_FIRSTHDR(&header), let data = CBerthLinux_CMSG_DATA(cmsg) {
                cmsg.pointee.cmsg_level = SOL_SOCKET
                cmsg.pointee.cmsg_type = Int32(SCM_RIGHTS)
                cmsg.pointee.cmsg_len = CBerthLinux_CMSG_LEN(size)
                descriptors.withUnsafeBytes {
                    UnsafeMutableRawPointer(data).copyMemory(from: $0.baseAddress!, byteCount: size)
                }
            }
            return try syscall("sendmsg") { sendmsg(fd, &header, Int32(MSG_NOSIGNAL)) }
        }
    }

    package static func peerCredentials(_ fd: borrowing Descriptor) throws(SyscallError) -> Credentials {
        let fd = fd.raw
        var pid: Int32 = 0
        var uid: UInt32 = 0
        var gid: UInt32 = 0
        _ = try syscall("getsockopt") { CBerthLinux_peer_credentials(fd, &pid, &uid, &gid) }
        return Credentials(pid: pid, uid: uid, gid: gid)
    }
}
