// What berth's log sinks and socket activation ask of the kernel: a log file opened for
// appending, one write per line, a unix datagram socket connected to syslog, the wall clock,
// the host name and pid a syslog line carries, and the descriptor flags and environment of
// sd_listen_fds(3). One wrapper per call, as everywhere in LinuxIO.

import CBerthLinux
import Glibc
import SystemPackage

/// Calls on files and on descriptors whatever they are.
public enum File {
    /// open(2) for appending, created with `permissions` (minus the umask) if it is missing,
    /// close-on-exec. The error names the path: `open /var/log/berth.log: permission denied`.
    public static func openForAppending(_ path: String, permissions: mode_t = 0o640) throws(SyscallError) -> Descriptor
    {
        let flags = O_WRONLY | O_APPEND | O_CREAT | CBerthLinux_O_CLOEXEC
        do {
            return Descriptor(taking: try syscall("open") { Glibc.open(path, flags, permissions) })
        } catch {
            throw error.about(path)
        }
    }

    /// One write(2): the bytes the kernel took (all of them for a file opened for appending,
    /// short of a full disk). EINTR retried; EAGAIN is an error here (log descriptors block).
    public static func write(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) throws(SyscallError) -> Int {
        try syscall("write") { Glibc.write(fd, bytes.baseAddress, bytes.count) }
    }

    /// Writes all of `text`, retrying short writes; gives up quietly on an error (a closed stdout).
    public static func writeAll(_ fd: Int32, _ text: String) {
        var text = text
        text.withUTF8 { bytes in
            var done = 0
            while done < bytes.count {
                let n = Glibc.write(fd, bytes.baseAddress! + done, bytes.count - done)
                if n < 0 && Glibc.errno == EINTR { continue }
                if n <= 0 { return }
                done += n
            }
        }
    }

    /// Reads until end of file (a plugin's stdin), at most `limit` bytes.
    public static func readAll(_ fd: Int32, limit: Int = 16 << 20) throws(SyscallError) -> [UInt8] {
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 << 10)
        while bytes.count < limit {
            let n = try syscall("read") { chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) } }
            if n == 0 { break }
            bytes += chunk[0..<n]
        }
        return bytes
    }

    /// fcntl(F_SETFD, FD_CLOEXEC): what sd_listen_fds does to every descriptor it hands over.
    /// A descriptor that is not open is an error here (EBADF), not a trap: the number came from
    /// the environment (LISTEN_FDS), not from berth.
    public static func setCloseOnExec(_ fd: Int32) throws(SyscallError) {
        while fcntl(fd, F_SETFD, FD_CLOEXEC) == -1 {
            if Glibc.errno == EINTR { continue }
            throw SyscallError("fcntl", Errno(rawValue: Glibc.errno), subject: "fd \(fd)")
        }
    }
}

extension Socket {
    /// A non-blocking, close-on-exec unix datagram socket connected to `path` (`/dev/log`).
    public static func connectUnixDatagram(_ path: String) throws(SyscallError) -> Descriptor {
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
    public static func isV6Only(_ fd: Int32) throws(SyscallError) -> Bool {
        try getOption(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY) != 0
    }

    /// SO_ACCEPTCONN: whether listen(2) was called on it.
    public static func isListening(_ fd: Int32) throws(SyscallError) -> Bool {
        try getOption(fd, SOL_SOCKET, SO_ACCEPTCONN) != 0
    }
}

/// Wall-clock time, for log lines (the event loop's clock is monotonic).
public struct WallTime: Sendable, Equatable {
    /// Seconds since 1970-01-01T00:00:00Z.
    public var seconds: Int64
    public var nanoseconds: Int32

    public init(seconds: Int64, nanoseconds: Int32) {
        self.seconds = seconds
        self.nanoseconds = nanoseconds
    }

    /// clock_gettime(CLOCK_REALTIME) (vDSO: no system call).
    public static func now() -> WallTime {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return WallTime(seconds: Int64(ts.tv_sec), nanoseconds: Int32(ts.tv_nsec))
    }
}

/// What a process knows about itself.
public enum ThisProcess {
    /// getpid(2).
    public static var id: Int32 { getpid() }

    /// gethostname(2); empty if it fails.
    public static var hostname: String {
        var buffer = [CChar](repeating: 0, count: 256)
        guard gethostname(&buffer, buffer.count - 1) == 0 else { return "" }
        return String(decoding: buffer.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// getenv(3).
    public static func environment(_ name: String) -> String? {
        getenv(name).map { String(cString: $0) }
    }

    /// unsetenv(3): children started later do not inherit it.
    public static func unsetEnvironment(_ name: String) {
        _ = unsetenv(name)
    }
}
