import CBerthLinux
import Glibc
import SystemPackage

/// A kernel pipe used as the buffer between two sockets for splice(2).
public struct Pipe: ~Copyable {
    public let read: Descriptor
    public let write: Descriptor
    /// What the kernel granted: F_SETPIPE_SZ may round up, or refuse (then the default stays).
    public let capacity: Int

    /// A non-blocking, close-on-exec pipe of about `size` bytes.
    public init(size: Int) throws(SyscallError) {
        var fds: (Int32, Int32) = (-1, -1)
        _ = try withUnsafeMutableBytes(of: &fds) { (raw) throws(SyscallError) in
            try syscall("pipe2") {
                CBerthLinux_pipe2(raw.baseAddress!.assumingMemoryBound(to: Int32.self), CBerthLinux_O_NONBLOCK | CBerthLinux_O_CLOEXEC)
            }
        }
        read = Descriptor(taking: fds.0)
        write = Descriptor(taking: fds.1)
        if size > 0 {
            // EPERM past /proc/sys/fs/pipe-max-size for unprivileged users: keep the default.
            _ = fcntl(write.raw, CBerthLinux_F_SETPIPE_SZ, Int32(size))
        }
        capacity = Int(fcntl(write.raw, CBerthLinux_F_GETPIPE_SZ))
    }
}

public enum Splice {
    /// Moves up to `length` bytes from `from` to `to` without copying to userspace; one side must be a pipe.
    /// `.done(0)` means end of file on `from`.
    @inline(__always)
    public static func move(from: Int32, to: Int32, length: Int, more: Bool = false) throws(SyscallError) -> IOResult<Int> {
        let flags = CBerthLinux_SPLICE_F_NONBLOCK | (more ? CBerthLinux_SPLICE_F_MORE : 0)
        return try syscallNonBlocking("splice") { CBerthLinux_splice(from, to, length, flags) }
    }
}

extension Pipe {
    /// Adopts a pipe that a pool kept as raw numbers.
    public init(adoptingRead read: Int32, write: Int32, capacity: Int) {
        self.read = Descriptor(taking: read)
        self.write = Descriptor(taking: write)
        self.capacity = capacity
    }

    /// Gives up ownership, for a pool to keep the numbers.
    public consuming func release() -> (read: Int32, write: Int32) {
        (read.release(), write.release())
    }
}
