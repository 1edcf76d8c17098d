import Glibc
import SystemPackage

/// What the process holds of the kernel's resources, for metrics: the descriptors open now (the
/// limit on them is `Limits.openFiles()`).
package enum Resources {
    /// Descriptors open in this process now: the entries of /proc/self/fd, less the one that
    /// reads them.
    package static func openDescriptorCount() throws(SyscallError) -> Int {
        guard let dir = opendir("/proc/self/fd") else {
            throw SyscallError("opendir", Errno(rawValue: Glibc.errno), subject: "/proc/self/fd")
        }
        defer { closedir(dir) }
        var count = 0
        while let entry = readdir(dir) {
            let dot = withUnsafeBytes(of: entry.pointee.d_name) { name in
                name[0] == UInt8(ascii: ".") && (name[1] == 0 || (name[1] == UInt8(ascii: ".") && name[2] == 0))
            }
            if !dot { count += 1 }
        }
        return count - 1
    }
}
