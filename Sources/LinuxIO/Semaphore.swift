import Glibc

/// A counting semaphore (sem_t) with a deadline: the control path waits on it for answers from
/// the loops, and a loop that does not answer cannot hold the waiter forever. Not for the data path.
package final class Semaphore: @unchecked Sendable {
    private let sem: UnsafeMutablePointer<sem_t>

    package init(value: UInt32 = 0) {
        sem = .allocate(capacity: 1)
        sem_init(sem, 0, value)
    }

    deinit {
        sem_destroy(sem)
        sem.deallocate()
    }

    package func signal() { sem_post(sem) }

    /// Waits for one `signal`, however long that takes.
    package func wait() {
        while sem_wait(sem) != 0 && Glibc.errno == EINTR {}
    }

    /// Waits for one `signal` until `deadline` (CLOCK_REALTIME, as sem_timedwait wants it); false
    /// when the deadline passed first.
    package func wait(until deadline: timespec) -> Bool {
        var deadline = deadline
        while true {
            if sem_timedwait(sem, &deadline) == 0 { return true }
            if Glibc.errno == EINTR { continue }
            return false
        }
    }

    /// A CLOCK_REALTIME deadline `duration` from now.
    package static func deadline(after duration: Duration) -> timespec {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        let (seconds, attoseconds) = duration.components
        var nanoseconds = Int(now.tv_nsec) + Int(attoseconds / 1_000_000_000)
        var total = Int(now.tv_sec) + Int(seconds)
        total += nanoseconds / 1_000_000_000
        nanoseconds %= 1_000_000_000
        return timespec(tv_sec: total, tv_nsec: nanoseconds)
    }
}
