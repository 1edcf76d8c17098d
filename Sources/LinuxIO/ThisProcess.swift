// What a process knows about itself: the wall clock (log lines; the event loop's clock is
// monotonic), its host name and pid (syslog lines), its environment (sd_listen_fds(3), BERTH_LOG).

import CBerthLinux
import Glibc
import SystemPackage

/// Wall-clock time, for log lines (the event loop's clock is monotonic).
package struct WallTime: Sendable, Equatable {
    /// Seconds since 1970-01-01T00:00:00Z.
    package var seconds: Int64
    package var nanoseconds: Int32

    package init(seconds: Int64, nanoseconds: Int32) {
        self.seconds = seconds
        self.nanoseconds = nanoseconds
    }

    /// clock_gettime(CLOCK_REALTIME) (vDSO: no system call).
    package static func now() -> WallTime {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return WallTime(seconds: Int64(ts.tv_sec), nanoseconds: Int32(ts.tv_nsec))
    }
}

/// What a process knows about itself.
package enum ThisProcess {
    /// getpid(2).
    package static var id: Int32 { getpid() }

    /// gethostname(2); empty if it fails.
    package static var hostname: String {
        var buffer = [CChar](repeating: 0, count: 256)
        guard gethostname(&buffer, buffer.count - 1) == 0 else { return "" }
        return String(decoding: buffer.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// getenv(3).
    package static func environment(_ name: String) -> String? {
        getenv(name).map { String(cString: $0) }
    }

    /// unsetenv(3): children started later do not inherit it.
    package static func unsetEnvironment(_ name: String) {
        _ = unsetenv(name)
    }
}
