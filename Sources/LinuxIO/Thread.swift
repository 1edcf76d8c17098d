import CBerthLinux
import Glibc
import Synchronization

/// A plain pthread: berth's loops each own one, with no runtime between them and the kernel.
public final class LoopThread {
    private let handle: pthread_t
    private var joined = false

    private final class Box {
        let body: () -> Void
        init(_ body: @escaping () -> Void) { self.body = body }
    }

    /// Starts `body` on a new thread. The caller hands over whatever `body` captures:
    /// nothing it captures may be used by the caller until `join` returns.
    public init(name: String, _ body: @escaping @Sendable () -> Void) throws(SyscallError) {
        let box = Unmanaged.passRetained(Box(body)).toOpaque()
        var thread = pthread_t()
        let rc = pthread_create(
            &thread,
            nil,
            { raw in
                let box = Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue()
                box.body()
                return nil
            },
            box
        )
        if rc != 0 {
            Unmanaged<Box>.fromOpaque(box).release()
            throw SyscallError("pthread_create", .init(rawValue: rc))
        }
        _ = CBerthLinux_pthread_setname(thread, String(name.prefix(15)))
        handle = thread
    }

    /// Waits for the thread to end; later calls return at once.
    public func join() {
        guard !joined else { return }
        joined = true
        pthread_join(handle, nil)
    }
}

/// Lowers the calling thread's scheduling weight (a bulk loop's): SCHED_BATCH if `batch` (never
/// preempts a woken thread), and `nice` (0 to 19). Other threads of the process keep theirs.
package func lowerThreadPriority(batch: Bool, nice: Int32) throws(SyscallError) {
    _ = try syscall("setpriority") { CBerthLinux_lower_thread_priority(batch ? 1 : 0, nice) }
}

/// CPUs this process may run on (its affinity mask): the default number of event loops.
package func usableCPUs() -> Int { Int(CBerthLinux_usable_cpus()) }

/// Moves a non-Sendable value to another thread that becomes its only user.
package struct Handover<Value>: @unchecked Sendable {
    package let value: Value
    package init(_ value: Value) { self.value = value }
}

/// Stops a set of loops from any thread, including loops that start after the call.
package final class Stopper: Sendable {
    private let state = Mutex<(stopped: Bool, wakers: [LoopWaker])>((false, []))

    package init() {}

    /// Adds a loop's waker; stops it at once if `stop` came first.
    package func add(_ waker: LoopWaker) {
        let stopNow = state.withLock { s in
            s.wakers.append(waker)
            return s.stopped
        }
        if stopNow { waker.stop() }
    }

    package func stop() {
        let wakers = state.withLock { s in
            s.stopped = true
            return s.wakers
        }
        for w in wakers { w.stop() }
    }

    package var stopped: Bool { state.withLock { $0.stopped } }

    /// Lets go of the loops' wakers (their eventfds) once the loops have ended; a stop stays a stop.
    package func forgetLoops() {
        state.withLock { $0.wakers.removeAll() }
    }
}
