// Calls on files and on descriptors whatever they are: a log file opened for appending, whole
// writes and reads, close-on-exec. One wrapper per call, as everywhere in LinuxIO.

import CBerthLinux
import Glibc
import SystemPackage

/// The standard streams a process starts with: not opened by berth, never closed by it.
package enum StandardStream: Int32, Sendable {
    case input = 0
    case output = 1
    case error = 2
}

/// Calls on files and on descriptors whatever they are.
package enum File {
    /// open(2) for appending, created with `permissions` (minus the umask) if it is missing,
    /// close-on-exec. The error names the path: `open /var/log/berth.log: permission denied`.
    package static func openForAppending(_ path: String, permissions: mode_t = 0o640) throws(SyscallError) -> Descriptor
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
    package static func write(_ fd: borrowing Descriptor, _ bytes: UnsafeRawBufferPointer) throws(SyscallError) -> Int {
        let fd = fd.raw
        return try syscall("write") { Glibc.write(fd, bytes.baseAddress, bytes.count) }
    }

    /// Writes all of `text`, retrying short writes; gives up quietly on an error (a reader gone).
    package static func writeAll(_ fd: borrowing Descriptor, _ text: String) { writeAll(raw: fd.raw, text) }

    /// `writeAll` to stdout or stderr (one that is closed loses the text quietly).
    package static func writeAll(_ stream: StandardStream, _ text: String) { writeAll(raw: stream.rawValue, text) }

    private static func writeAll(raw fd: Int32, _ text: String) {
        var text = text
        text.withUTF8 { bytes in
            guard let base = bytes.baseAddress else { return }
            var done = 0
            while done < bytes.count {
                let n = Glibc.write(fd, base + done, bytes.count - done)
                if n < 0 && Glibc.errno == EINTR { continue }
                if n <= 0 { return }
                done += n
            }
        }
    }

    /// Reads until end of file (a plugin's stdin), at most `limit` bytes.
    package static func readAll(_ stream: StandardStream, limit: Int = 16 << 20) throws(SyscallError) -> [UInt8] {
        let fd = stream.rawValue
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 << 10)
        while bytes.count < limit {
            let n = try syscall("read") { chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) } }
            if n == 0 { break }
            bytes += chunk[0..<n]
        }
        return bytes
    }

    /// The `S_IFMT` bits of an open descriptor (S_IFIFO, S_IFSOCK, ...); nil when it is not open.
    /// For descriptors inherited from whoever started berth: a number that may be closed.
    package static func type(inherited fd: Int32) -> mode_t? {
        guard fcntl(fd, F_GETFD) != -1 else { return nil }
        var info = stat()
        guard fstat(fd, &info) == 0 else { return nil }
        return info.st_mode & S_IFMT
    }

    /// fcntl(F_SETFD, FD_CLOEXEC): what sd_listen_fds does to every descriptor it hands over.
    /// A descriptor that is not open is an error here (EBADF), not a trap: the number came from
    /// the environment (LISTEN_FDS), not from berth.
    package static func setCloseOnExec(inherited fd: Int32) throws(SyscallError) {
        while fcntl(fd, F_SETFD, FD_CLOEXEC) == -1 {
            if Glibc.errno == EINTR { continue }
            throw SyscallError("fcntl", Errno(rawValue: Glibc.errno), subject: "fd \(fd)")
        }
    }
}
