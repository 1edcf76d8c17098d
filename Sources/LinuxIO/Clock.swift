import Glibc

/// Monotonic time in nanoseconds (vDSO: no system call).
public struct Instant: Comparable, Sendable, Hashable {
    public var nanoseconds: UInt64
    public init(nanoseconds: UInt64) { self.nanoseconds = nanoseconds }

    public static func now() -> Instant {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Instant(nanoseconds: UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec))
    }

    public static func < (a: Instant, b: Instant) -> Bool { a.nanoseconds < b.nanoseconds }
    /// Saturates: a deadline too far away to count is "never", not a wrap into the past.
    public static func + (a: Instant, d: Duration) -> Instant {
        let (sum, overflow) = a.nanoseconds.addingReportingOverflow(d.nanosecondsClamped)
        return Instant(nanoseconds: overflow ? .max : sum)
    }
}

extension Duration {
    /// Whole nanoseconds, clamped to UInt64.
    package var nanosecondsClamped: UInt64 {
        let (s, atto) = components
        if s < 0 { return 0 }
        let (mul, over) = UInt64(s).multipliedReportingOverflow(by: 1_000_000_000)
        if over { return .max }
        return mul &+ UInt64(atto / 1_000_000_000)
    }
}
