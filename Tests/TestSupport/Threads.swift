// This process's threads as /proc shows them, for tests whose precondition is that a loop's
// thread is idle.

import Glibc

/// Returns once every thread of this process named in `names` sleeps in epoll_wait (its wchan
/// says so), so that what the test does next finds those loops waiting; throws after `seconds`.
/// A condition polled, not a fixed sleep.
package func waitUntilAsleepInEpoll(_ names: Set<String>, seconds: Double = 10) throws {
    let deadline = Double(DispatchTimeNanoseconds.now()) / 1e9 + seconds
    while true {
        let states = threadStates().filter { names.contains($0.name) }
        if states.count == names.count && states.allSatisfy({ $0.state == "S" && $0.wchan.contains("epoll") }) {
            return
        }
        if Double(DispatchTimeNanoseconds.now()) / 1e9 > deadline {
            throw TestFailure("threads not asleep in epoll_wait after \(seconds) s: \(states)")
        }
        usleep(1000)
    }
}

private enum DispatchTimeNanoseconds {
    static func now() -> UInt64 {
        var t = timespec()
        clock_gettime(CLOCK_MONOTONIC, &t)
        return UInt64(t.tv_sec) * 1_000_000_000 + UInt64(t.tv_nsec)
    }
}

/// Each thread of this process: its /proc/self/task/TID/ directory (with the slash) and its name.
package func threadsOfThisProcess() -> [(directory: String, name: String)] {
    guard let dir = opendir("/proc/self/task") else { return [] }
    defer { closedir(dir) }
    var out: [(directory: String, name: String)] = []
    while let entry = readdir(dir) {
        let tid = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        guard tid.first?.isNumber == true else { continue }
        let base = "/proc/self/task/\(tid)/"
        out.append((base, (readFile(base + "comm") ?? "").trimmingSuffix("\n")))
    }
    return out
}

/// Name, state letter and wait channel of each thread of this process.
private func threadStates() -> [(name: String, state: String, wchan: String)] {
    threadsOfThisProcess().map { base, name in
        // stat: "tid (comm) S ...": the state follows the last ')'.
        let stat = readFile(base + "stat") ?? ""
        let state = stat.lastIndex(of: ")").map { String(stat[stat.index($0, offsetBy: 2)...].prefix(1)) } ?? "?"
        return (name, state, readFile(base + "wchan") ?? "")
    }
}

extension String {
    fileprivate func trimmingSuffix(_ suffix: String) -> String {
        hasSuffix(suffix) ? String(dropLast(suffix.count)) : self
    }
}
