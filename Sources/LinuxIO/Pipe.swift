import CBerthLinux
import Glibc
import SystemPackage

/// A kernel pipe used as the buffer between two sockets for splice(2).
package struct Pipe: ~Copyable {
    package let read: Descriptor
    package let write: Descriptor
    /// What the kernel granted: F_SETPIPE_SZ may round up, or refuse (then the default stays).
    package let capacity: Int

    /// A non-blocking, close-on-exec pipe of about `size` bytes.
    package init(size: Int) throws(SyscallError) {
        var fds: (Int32, Int32) = (-1, -1)
        _ = try withUnsafeMutableBytes(of: &fds) { (raw) throws(SyscallError) in
            try syscall("pipe2") {
                CBerthLinux_pipe2(
                    raw.baseAddress!.assumingMemoryBound(to: Int32.self),
                    CBerthLinux_O_NONBLOCK | CBerthLinux_O_CLOEXEC
                )
            }
        }
        read = Descriptor(taking: fds.0)
        write = Descriptor(taking: fds.1)
        if size > 0 {
            // EPERM past /proc/sys/fs/pipe-max-size for unprivileged users, EINVAL past what the
            // kernel can round: keep the default. Clamped: a size past Int32 is refused, not a trap.
            _ = fcntl(write.raw, CBerthLinux_F_SETPIPE_SZ, Int32(clamping: size))
        }
        capacity = Int(fcntl(write.raw, CBerthLinux_F_GETPIPE_SZ))
    }
}

package enum Splice {
    /// Moves up to `length` bytes from `from` to `to` without copying to userspace; one side must be a pipe.
    /// `.done(0)` means end of file on `from`.
    @inline(__always)
    package static func move(
        from: borrowing Descriptor,
        to: borrowing Descriptor,
        length: Int
    ) throws(SyscallError) -> IOResult<Int> {
        let (source, target) = (from.raw, to.raw)
        return try syscallNonBlocking("splice") {
            CBerthLinux_splice(source, target, length, CBerthLinux_SPLICE_F_NONBLOCK)
        }
    }
}

extension Pipe {
    /// write(2) into the pipe without blocking: bytes taken, or `.wouldBlock`.
    @inline(__always)
    package func write(from buffer: UnsafeRawPointer, count: Int) throws(SyscallError) -> IOResult<Int> {
        let fd = write.raw
        return try syscallNonBlocking("write") { Glibc.write(fd, buffer, count) }
    }

    /// Puts a pipe together from descriptors a pool kept.
    package init(read: consuming Descriptor, write: consuming Descriptor, capacity: Int) {
        self.read = read
        self.write = write
        self.capacity = capacity
    }

    /// Takes it apart, for a pool that keeps read and write ends in two queues.
    package consuming func store(reads: inout DescriptorQueue, writes: inout DescriptorQueue) {
        reads.append(read)
        writes.append(write)
    }
}
