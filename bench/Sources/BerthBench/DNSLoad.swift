// udp-dns: DNS-style load, many short flows. A stub resolver takes a new source port for every
// query, so each exchange here is a new UDP socket (a new port), one request, its answer, close:
// a forwarder sees one new flow per exchange, and what it costs is the descriptors it holds for
// flows that are over. Answers must be exactly the request (the backend echoes): a wrong one
// counts as an error. The forwarder's descriptors (all its processes) are sampled throughout.

import CBench
import Glibc
import LinuxIO
import Synchronization

struct DNSResult {
    var answered: Int
    var wrong: Int
    var lost: Int
    var seconds: Double
    /// Peak open descriptors of the forwarder's processes; nil with no forwarder (direct).
    var peakDescriptors: Int?
    var perSecond: Double { Double(answered) / seconds }
}

extension Load {
    /// `exchanges` one-shot request/response exchanges, `concurrency` at a time (one thread each,
    /// blocking sockets, 1 s to answer), each from a socket of its own. `forwarder`: the process
    /// groups whose descriptors are sampled every 5 ms.
    static func dnsStyle(
        to address: SocketAddress,
        exchanges: Int,
        concurrency: Int,
        ns: String?,
        forwarder: Set<pid_t>
    ) throws -> DNSResult {
        let processes = ProcFS.groups().filter { forwarder.contains($0.pgid) }.map(\.pid)
        let next = Atomic<Int>(0)
        let answered = Atomic<Int>(0)
        let wrong = Atomic<Int>(0)
        let lost = Atomic<Int>(0)
        let done = Atomic<Bool>(false)
        let peak = Atomic<Int>(0)
        let sampler = try LoopThread(name: "bench-dns-fds") {
            while !done.load(ordering: .acquiring) {
                let n = processes.reduce(0) { $0 + ProcFS.ids(inFDs: $1) }
                if n > peak.load(ordering: .relaxed) { peak.store(n, ordering: .relaxed) }
                sleepSeconds(0.005)
            }
        }
        let begin = nowNanos()
        try Net.inside(ns) {
            // Threads started here make their sockets in the client's namespace, as this one does.
            var workers: [LoopThread] = []
            for _ in 0..<max(1, concurrency) {
                workers.append(
                    try LoopThread(name: "bench-dns") {
                        var request = [UInt8](repeating: 0, count: 40)
                        var reply = [UInt8](repeating: 0, count: 512)
                        while true {
                            let i = next.add(1, ordering: .relaxed).oldValue
                            if i >= exchanges { return }
                            switch exchange(address, i, &request, &reply) {
                            case .answered: answered.add(1, ordering: .relaxed)
                            case .wrong: wrong.add(1, ordering: .relaxed)
                            case .lost: lost.add(1, ordering: .relaxed)
                            }
                        }
                    }
                )
            }
            for worker in workers { worker.join() }
        }
        let seconds = Double(nowNanos() - begin) / 1e9
        sleepSeconds(0.05)
        done.store(true, ordering: .releasing)
        sampler.join()
        return DNSResult(
            answered: answered.load(ordering: .relaxed),
            wrong: wrong.load(ordering: .relaxed),
            lost: lost.load(ordering: .relaxed),
            seconds: seconds,
            peakDescriptors: processes.isEmpty ? nil : peak.load(ordering: .relaxed)
        )
    }

    private enum Outcome { case answered, wrong, lost }

    /// One query from a new socket: a 40-byte request carrying its number, the echo compared byte
    /// for byte.
    private static func exchange(
        _ address: SocketAddress,
        _ i: Int,
        _ request: inout [UInt8],
        _ reply: inout [UInt8]
    ) -> Outcome {
        let fd = Glibc.socket(address.family, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return .lost }
        defer { close(fd) }
        Net.setReceiveTimeout(fd, milliseconds: 1000)
        guard address.withSockAddr({ Glibc.connect(fd, $0, $1) }) == 0 else { return .lost }
        for k in 0..<request.count { request[k] = UInt8(truncatingIfNeeded: (i >> ((k % 8) * 8)) &+ k) }
        let sent = request.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, 0) }
        guard sent == request.count else { return .lost }
        let n = reply.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        if n < 0 { return .lost }
        return n == request.count && reply[0..<n].elementsEqual(request) ? .answered : .wrong
    }
}

extension ProcFS {
    /// Open descriptors of process `pid` (entries of /proc/PID/fd).
    static func ids(inFDs pid: pid_t) -> Int {
        guard let dir = opendir("/proc/\(pid)/fd") else { return 0 }
        defer { closedir(dir) }
        var n = 0
        while let entry = readdir(dir) {
            if entry.pointee.d_name.0 != 46 { n += 1 }  // not "." or ".."
        }
        return n
    }
}

extension Runner {
    /// udp-dns for one target: answers per second and the forwarder's peak descriptors.
    func measureDNS(_ s: ScenarioKind, _ t: Target, _ f: Forwarding, _ address: SocketAddress, ns: String?) throws {
        let n = options.plan.dnsExchanges
        let r = try Load.dnsStyle(to: address, exchanges: n, concurrency: 16, ns: ns, forwarder: f.groups)
        guard r.answered > 0 else { throw BenchError("no answer at all (\(r.lost) lost, \(r.wrong) wrong)") }
        results.add(s, "udp-dns-rate", t.name, r.perSecond)
        results.countErrors(s, "udp-dns-rate", t.name, r.lost + r.wrong)
        if let peak = r.peakDescriptors {
            results.add(s, "udp-dns-fds", t.name, Double(peak))
        } else {
            results.note(s, "udp-dns-fds", t.name, "no forwarder", unsupported: true)
        }
        var line = "  udp-dns \(t.name): \(fmt(r.perSecond)) answers/s, \(r.answered) of \(n) right"
        if r.wrong > 0 || r.lost > 0 { line += ", \(r.wrong) wrong, \(r.lost) lost" }
        if let peak = r.peakDescriptors { line += ", peak \(peak) descriptors" }
        line += "\n"
        line.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
    }
}
