// Forwarder processes: spawned in a process group of their own (so a forking peer's
// children go with it), stopped with SIGTERM then SIGKILL, measured from /proc.

import BenchReport
import CBench
import Glibc

final class Child {
    let pid: pid_t
    let name: String
    /// Our end of the child's stdout, when asked for.
    let stdoutFD: Int32
    /// Our end of fd 3 (docker-proxy's readiness pipe), when asked for.
    let fd3: Int32
    let stderrPath: String
    private(set) var exited = false
    private var buffered: [UInt8] = []

    init(pid: pid_t, name: String, stdoutFD: Int32, fd3: Int32, stderrPath: String) {
        self.pid = pid
        self.name = name
        self.stdoutFD = stdoutFD
        self.fd3 = fd3
        self.stderrPath = stderrPath
    }

    /// Starts `argv` (argv[0] a path or a name on PATH). `captureStdout`: read its lines;
    /// `readinessFD3`: give it a pipe as fd 3.
    static func spawn(
        _ argv: [String],
        name: String,
        captureStdout: Bool = false,
        readinessFD3: Bool = false,
        workDirectory: String
    ) throws -> Child {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        var out: [Int32] = [-1, -1]
        var three: [Int32] = [-1, -1]
        let devnull = open("/dev/null", O_RDWR | O_CLOEXEC)
        defer { close(devnull) }
        let stderrPath = "\(workDirectory)/\(name).\(UInt32.random(in: 0..<UInt32.max)).stderr"
        let errFD = open(stderrPath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        defer { if errFD >= 0 { close(errFD) } }
        posix_spawn_file_actions_adddup2(&actions, devnull, 0)
        if captureStdout {
            _ = try check(CBench_pipe2(&out, CBench_O_CLOEXEC), "pipe2")
            posix_spawn_file_actions_adddup2(&actions, out[1], 1)
        } else {
            posix_spawn_file_actions_adddup2(&actions, devnull, 1)
        }
        posix_spawn_file_actions_adddup2(&actions, errFD >= 0 ? errFD : devnull, 2)
        if readinessFD3 {
            _ = try check(CBench_pipe2(&three, CBench_O_CLOEXEC), "pipe2")
            posix_spawn_file_actions_adddup2(&actions, three[1], 3)
        }
        _ = CBench_spawn_closefrom(&actions, readinessFD3 ? 4 : 3)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attributes, &empty)
        posix_spawnattr_setpgroup(&attributes, 0)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETPGROUP))
        let cArgs = argv.map { strdup($0) } + [nil]
        defer { for p in cArgs { free(p) } }
        var pid: pid_t = 0
        let rc = posix_spawnp(&pid, argv[0], &actions, &attributes, cArgs, environ)
        if out[1] >= 0 { close(out[1]) }
        if three[1] >= 0 { close(three[1]) }
        guard rc == 0 else {
            if out[0] >= 0 { close(out[0]) }
            if three[0] >= 0 { close(three[0]) }
            throw BenchError("spawn \(argv[0]): \(errnoText(rc))")
        }
        Cleanup.shared.track(pid)
        return Child(pid: pid, name: name, stdoutFD: out[0], fd3: three[0], stderrPath: stderrPath)
    }

    /// Whether it has exited (reaps it).
    var hasExited: Bool {
        if exited { return true }
        var status: Int32 = 0
        if waitpid(pid, &status, WNOHANG) == pid { exited = true }
        return exited
    }

    /// The next line of stdout, waiting until `deadline` (monotonic ns); nil at EOF or time-out.
    func readLine(deadline: UInt64) -> String? {
        while true {
            if let newline = buffered.firstIndex(of: 10) {
                let line = String(decoding: buffered[..<newline], as: UTF8.self)
                buffered.removeSubrange(...newline)
                return line
            }
            let now = nowNanos()
            if now >= deadline { return nil }
            var p = pollfd(fd: stdoutFD, events: Int16(POLLIN), revents: 0)
            if poll(&p, 1, Int32(min(1000, (deadline - now) / 1_000_000 + 1))) <= 0 { continue }
            var chunk = [UInt8](repeating: 0, count: 65536)
            let n = read(stdoutFD, &chunk, chunk.count)
            if n <= 0 { return nil }
            buffered += chunk[..<n]
        }
    }

    /// docker-proxy's readiness: "0\n" on fd 3 once listening, "1\n<error>" if not.
    func waitReadyFD3(deadline: UInt64) throws {
        var text: [UInt8] = []
        while true {
            let now = nowNanos()
            if now >= deadline { throw BenchError("\(name): no readiness on fd 3 in time") }
            var p = pollfd(fd: fd3, events: Int16(POLLIN), revents: 0)
            if poll(&p, 1, Int32(min(1000, (deadline - now) / 1_000_000 + 1))) <= 0 { continue }
            var chunk = [UInt8](repeating: 0, count: 4096)
            let n = read(fd3, &chunk, chunk.count)
            if n > 0 { text += chunk[..<n] }
            if text.starts(with: [UInt8(ascii: "0"), 10]) { return }
            if n <= 0 || text.starts(with: [UInt8(ascii: "1")]) {
                // On failure it writes "1\n" and the error, then exits (closing fd 3).
                if n > 0 { continue }
                let message = String(decoding: text.dropFirst(2), as: UTF8.self)
                throw BenchError("\(name): \(message.isEmpty ? "exited before it was ready" : message) \(stderrTail())")
            }
        }
    }

    func stderrTail() -> String {
        guard let f = fopen(stderrPath, "r") else { return "" }
        defer { fclose(f) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = fread(&chunk, 1, chunk.count, f)
            if n <= 0 { break }
            bytes += chunk[..<n]
            if bytes.count > 1 << 16 { bytes.removeFirst(bytes.count - (1 << 16)) }
        }
        let text = String(decoding: bytes, as: UTF8.self).split(separator: "\n").suffix(3).joined(separator: " | ")
        return text
    }

    /// SIGTERM to its group, then SIGKILL after `grace` seconds; reaps it.
    func stop(grace: Double = 2) {
        if !exited {
            kill(-pid, SIGTERM)
            kill(pid, SIGTERM)
            let deadline = nowNanos() + UInt64(grace * 1e9)
            while !hasExited && nowNanos() < deadline { sleepSeconds(0.005) }
            if !exited {
                kill(-pid, SIGKILL)
                var status: Int32 = 0
                waitpid(pid, &status, 0)
                exited = true
            }
        }
        kill(-pid, SIGKILL)  // children a forking peer left behind
        Cleanup.shared.untrack(pid)
        if stdoutFD >= 0 { close(stdoutFD) }
        if fd3 >= 0 { close(fd3) }
        unlink(stderrPath)
    }
}

/// Stops many children at once: SIGTERM to all, then reap, then SIGKILL what is left.
func stopAll(_ children: [Child]) {
    for c in children where !c.hasExited {
        kill(-c.pid, SIGTERM)
        kill(c.pid, SIGTERM)
    }
    let deadline = nowNanos() + 3_000_000_000
    while children.contains(where: { !$0.hasExited }) && nowNanos() < deadline { sleepSeconds(0.01) }
    for c in children { c.stop(grace: 0) }
}

// MARK: memory

/// Memory of a forwarder, all its processes together. `kib` is the resident set with
/// pages shared between its processes counted once (the sum of their private pages plus the
/// largest shared part): for one process exactly its RSS, and a peer that runs a process per
/// port or forks per connection is not charged its binary and libc once per process.
/// `rssSum` counts them every time, `pss` splits them with every other process (the runner too).
struct Memory {
    var kib: Double = 0
    var rssSum: Double = 0
    var pss: Double = 0
    var processes = 0
}

enum ProcFS {
    static func read(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 16384)
        while true {
            let n = Glibc.read(fd, &chunk, chunk.count)
            if n <= 0 { break }
            bytes += chunk[..<n]
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Process group of every process: pid → pgid.
    static func groups() -> [(pid: pid_t, pgid: pid_t)] {
        var result: [(pid_t, pid_t)] = []
        for pid in ids(in: "/proc") {
            guard let stat = read("/proc/\(pid)/stat"), let close = stat.lastIndex(of: ")") else { continue }
            // after "pid (comm) ": state ppid pgrp ...
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            if fields.count > 2, let pgid = pid_t(fields[2]) { result.append((pid, pgid)) }
        }
        return result
    }

    /// The numeric entries of a /proc directory: process ids in /proc, thread ids in /proc/PID/task.
    static func ids(in directory: String) -> [pid_t] {
        guard let dir = opendir(directory) else { return [] }
        defer { closedir(dir) }
        var result: [pid_t] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            if let id = pid_t(name) { result.append(id) }
        }
        return result
    }

    /// Memory of every process in these process groups.
    static func memory(groups wanted: Set<pid_t>) -> Memory {
        var m = Memory()
        var shared = 0.0
        for (pid, pgid) in groups() where wanted.contains(pgid) {
            guard let rollup = read("/proc/\(pid)/smaps_rollup") else { continue }
            m.processes += 1
            var rss = 0.0
            var own = 0.0
            for line in rollup.split(separator: "\n") {
                if line.hasPrefix("Rss:") { rss = kib(line) }
                if line.hasPrefix("Pss:") { m.pss += kib(line) }
                if line.hasPrefix("Private_Clean:") || line.hasPrefix("Private_Dirty:") { own += kib(line) }
            }
            m.rssSum += rss
            m.kib += own
            shared = max(shared, rss - own)
        }
        m.kib += shared
        return m
    }

    /// CPU time of every process in these process groups so far, in seconds: each one's own
    /// (all its threads, the ended ones too) and that of the children it has reaped (a peer
    /// that forks per connection). The own part from the process's CPU clock (nanoseconds),
    /// /proc's ticks (10 ms) only where that clock cannot be read.
    static func cpuSeconds(groups wanted: Set<pid_t>) -> Double {
        let tick = Double(sysconf(Int32(_SC_CLK_TCK)))
        var total = 0.0
        for (pid, pgid) in groups() where wanted.contains(pgid) {
            guard let stat = read("/proc/\(pid)/stat"), let ticks = CPUCost.ticks(procStat: stat) else { continue }
            total += Double(ticks.children) / tick
            var clock = clockid_t()
            var now = timespec()
            if clock_getcpuclockid(pid, &clock) == 0 && clock_gettime(clock, &now) == 0 {
                total += Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
            } else {
                total += Double(ticks.own) / tick
            }
        }
        return total
    }

    private static func kib(_ line: Substring) -> Double {
        Double(line.split(separator: " ").dropFirst().first ?? "0") ?? 0
    }

    /// Ports that sockets in namespace `ns` listen on (TCP) or are bound to (UDP), IPv4 and IPv6.
    static func boundPorts(ns: String?, udp: Bool) -> Set<UInt16> {
        (try? Net.inside(ns) {
            var ports = Set<UInt16>()
            var buffer = [UInt16](repeating: 0, count: 1 << 16)
            for family in [AF_INET, AF_INET6] {
                // TCP_LISTEN is 10; an unconnected UDP socket is in TCP_CLOSE, 7.
                let n = CBench_bound_ports(
                    family,
                    Int32(udp ? IPPROTO_UDP : IPPROTO_TCP),
                    udp ? 1 << 7 : 1 << 10,
                    &buffer,
                    Int32(buffer.count)
                )
                if n > 0 { ports.formUnion(buffer[0..<min(Int(n), buffer.count)]) }
            }
            return ports
        }) ?? []
    }
}
