// Unix stream sockets for berth's control API: the daemon's listener, the client's connection,
// and who the peer is (SO_PEERCRED).

import CBerthLinux
import Glibc

public enum UnixSocket {
    /// The peer of a connected unix socket, as the kernel vouches for it.
    public struct Credentials: Sendable, Equatable {
        public let pid: Int32
        public let uid: UInt32
        public let gid: UInt32
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

    /// Binds and listens on `path` (which must not exist), non-blocking and close-on-exec.
    public static func listen(path: String, backlog: Int32 = 128) throws(SyscallError) -> Descriptor {
        let socket = try Socket.make(family: AF_UNIX, type: Int32(SOCK_STREAM.rawValue))
        let rc = try withAddress(path) { Glibc.bind(socket.raw, $0, $1) }
        if rc != 0 { throw SyscallError("bind", .init(rawValue: errno), subject: path) }
        try Socket.listen(socket.raw, backlog: backlog)
        return socket
    }

    /// Connects to `path`, blocking (a client's call), close-on-exec. With `timeoutSeconds` the
    /// connect and every later send and recv give up after that long (EAGAIN).
    public static func connect(path: String, timeoutSeconds: Int? = nil) throws(SyscallError) -> Descriptor {
        let socket = Descriptor(
            taking: try syscall("socket") {
                Glibc.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | CBerthLinux_SOCK_CLOEXEC, 0)
            }
        )
        if let timeoutSeconds { try Socket.setTimeouts(socket.raw, seconds: timeoutSeconds) }
        while true {
            let rc = try withAddress(path) { Glibc.connect(socket.raw, $0, $1) }
            if rc == 0 { return socket }
            if errno == EINTR { continue }
            throw SyscallError("connect", .init(rawValue: errno), subject: path)
        }
    }

    public static func peerCredentials(_ fd: Int32) throws(SyscallError) -> Credentials {
        var pid: Int32 = 0
        var uid: UInt32 = 0
        var gid: UInt32 = 0
        _ = try syscall("getsockopt") { CBerthLinux_peer_credentials(fd, &pid, &uid, &gid) }
        return Credentials(pid: pid, uid: uid, gid: gid)
    }
}

/// Files and directories the control socket lives among.
public enum FileSystem {
    public static func makeDirectory(_ path: String, mode: mode_t) throws(SyscallError) {
        if mkdir(path, mode) != 0 && errno != EEXIST {
            throw SyscallError("mkdir", .init(rawValue: errno), subject: path)
        }
    }

    public static func remove(_ path: String) throws(SyscallError) {
        if unlink(path) != 0 && errno != ENOENT { throw SyscallError("unlink", .init(rawValue: errno), subject: path) }
    }

    public static func exists(_ path: String) -> Bool { access(path, F_OK) == 0 }

    public static func setMode(_ path: String, _ mode: mode_t) throws(SyscallError) {
        _ = try syscall("chmod") { chmod(path, mode) }
    }

    public static func setGroup(_ path: String, _ gid: gid_t) throws(SyscallError) {
        _ = try syscall("chown") { chown(path, uid_t.max, gid) }
    }

    /// The numeric id of group `name`, or nil if there is none.
    public static func groupID(_ name: String) -> gid_t? {
        guard let entry = getgrnam(name) else { return nil }
        return entry.pointee.gr_gid
    }

    /// The supplementary groups of process `pid` (the `Groups:` line of /proc/PID/status).
    public static func groups(ofProcess pid: Int32) -> [gid_t] {
        guard let text = readSmallFile("/proc/\(pid)/status") else { return [] }
        for line in text.split(separator: "\n") where line.hasPrefix("Groups:") {
            return line.dropFirst("Groups:".count).split(whereSeparator: { $0 == " " || $0 == "\t" }).compactMap {
                gid_t($0)
            }
        }
        return []
    }

    /// A file of at most 64 KiB, whole; nil if it cannot be read.
    public static func readSmallFile(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        let file = Descriptor(taking: fd)
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while bytes.count < 1 << 16 {
            let got = chunk.withUnsafeMutableBytes { read(file.raw, $0.baseAddress, $0.count) }
            if got < 0 && errno == EINTR { continue }
            if got <= 0 { break }
            bytes += chunk[..<got]
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
