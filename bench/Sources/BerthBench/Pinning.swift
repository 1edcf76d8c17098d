// The single-request latency figures run pinned: client, backend and every thread of the
// forwarder on one CPU, as the performance issue defines them. Then a round trip measures
// the forwarder's own work and its context switches, not how long a hypervisor takes to
// wake an idle virtual CPU (on this VM that alone is tens of microseconds per hop).

import CBench
import Glibc

enum Pinning {
    /// Runs `body` on the calling thread with it, the backend thread named `backend` and all of
    /// the forwarder's threads on one CPU; everything may run anywhere again afterwards.
    static func onOneCPU<R>(forwarder: Forwarding, backend: String, _ body: () throws -> R) throws -> R {
        let cpu = CBench_last_cpu()
        guard cpu >= 0 else { throw BenchError("cannot read the CPU affinity: \(errnoText())") }
        guard CBench_pin(0, cpu) == 0 else { throw BenchError("cannot pin to CPU \(cpu): \(errnoText())") }
        let others = threads(of: getpid(), named: backend) + forwarderThreads(forwarder)
        for tid in others { _ = CBench_pin(tid, cpu) }  // a thread gone meanwhile needs nothing
        defer { for tid in [0] + others { _ = CBench_pin(tid, -1) } }
        return try body()
    }

    /// Every thread of every process in the forwarder's process groups.
    private static func forwarderThreads(_ f: Forwarding) -> [pid_t] {
        let groups = f.groups
        return ProcFS.groups().filter { groups.contains($0.pgid) }.flatMap { threads(of: $0.pid, named: nil) }
    }

    /// Threads of `pid`, all or those whose name is `name`.
    private static func threads(of pid: pid_t, named name: String?) -> [pid_t] {
        ProcFS.ids(in: "/proc/\(pid)/task").filter { tid in
            name == nil || ProcFS.read("/proc/\(pid)/task/\(tid)/comm")?.trimmingWhitespace() == name
        }
    }
}
