// Resource limits: how many descriptors berth may open (RLIMIT_NOFILE), read and raised once at
// start, as Go programs such as docker-proxy raise theirs.

import Glibc

/// The soft and hard limit on one resource. The kernel enforces the soft one; an unprivileged process
/// may raise its soft limit up to the hard one.
package struct ResourceLimit: Sendable, Equatable {
    package var soft: UInt64
    package var hard: UInt64

    package init(soft: UInt64, hard: UInt64) {
        self.soft = soft
        self.hard = hard
    }

    /// RLIM_INFINITY: no limit.
    package static let unlimited = UInt64.max
}

package enum Limits {
    /// getrlimit(RLIMIT_NOFILE).
    package static func openFiles() throws(SyscallError) -> ResourceLimit {
        var limit = rlimit()
        _ = try syscall("getrlimit") { getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) }
        return ResourceLimit(soft: UInt64(limit.rlim_cur), hard: UInt64(limit.rlim_max))
    }

    /// setrlimit(RLIMIT_NOFILE).
    package static func setOpenFiles(_ new: ResourceLimit) throws(SyscallError) {
        var limit = rlimit(rlim_cur: rlim_t(new.soft), rlim_max: rlim_t(new.hard))
        _ = try syscall("setrlimit") { setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) }
    }

    /// Raises the soft limit on open files to the hard one and returns the limits now in force. When
    /// the kernel refuses (a hard limit of RLIM_INFINITY is above `fs.nr_open`), the soft limit stays as
    /// it was, as Go's runtime leaves it.
    @discardableResult
    package static func raiseOpenFiles() throws(SyscallError) -> ResourceLimit {
        var limit = try openFiles()
        guard limit.soft < limit.hard else { return limit }
        do {
            try setOpenFiles(ResourceLimit(soft: limit.hard, hard: limit.hard))
            limit.soft = limit.hard
        } catch {
            // EPERM or EINVAL: keep the soft limit.
        }
        return limit
    }
}
