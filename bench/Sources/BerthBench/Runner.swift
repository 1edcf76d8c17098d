// One run: for every scenario, every repetition runs every target before the next
// repetition starts (so drift on a shared machine hits all targets alike), and within a
// repetition every figure runs across all targets in turn.

import BenchReport
import Glibc
import Histogram
import LinuxIO

struct RunOptions {
    var duration: Double
    var repetitions: Int
    var groups: [FigureGroup]
    var scenarios: [ScenarioKind]
    var targets: [Target]
    /// Targets asked for but not here: name → why.
    var missingTargets: [(String, String)]
    var plan: FigurePlan
    var maxProcesses: Int
    var workDirectory: String
    /// `--threads` for the built-in berth targets (nil: berth's default); tcp-fair has its own
    /// (`FigurePlan.fairThreads`).
    var berthThreads: Int? = nil
}

/// Values and notes, by scenario, figure and target.
final class Results {
    struct Key: Hashable {
        let scenario: ScenarioKind
        let figure: String
        let target: String
    }

    struct Note {
        let text: String
        /// The target cannot do this (a UDP figure for HAProxy): not a missing figure.
        let unsupported: Bool
    }

    var values: [Key: [Double]] = [:]
    var notes: [Key: Note] = [:]
    /// Errors counted during a measurement (refused connections, lost datagrams...).
    var errors: [Key: Int] = [:]

    func add(_ s: ScenarioKind, _ figure: String, _ target: String, _ value: Double) {
        values[Key(scenario: s, figure: figure, target: target), default: []].append(value)
    }

    func note(_ s: ScenarioKind, _ figure: String, _ target: String, _ text: String, unsupported: Bool) {
        let key = Key(scenario: s, figure: figure, target: target)
        if notes[key] == nil { notes[key] = Note(text: text, unsupported: unsupported) }
    }

    func countErrors(_ s: ScenarioKind, _ figure: String, _ target: String, _ n: Int) {
        guard n > 0 else { return }
        errors[Key(scenario: s, figure: figure, target: target), default: 0] += n
    }
}

final class Runner {
    let options: RunOptions
    let results = Results()
    let progress: ProgressDisplay
    private var portCursor: UInt16 = 10_000
    private var backends: Backends?
    private var repetition = 1

    init(options: RunOptions) {
        self.options = options
        progress = ProgressDisplay(steps: Runner.steps(options), repetitions: options.repetitions)
    }

    private func log(_ text: String) { progress.log(text) }

    /// Whether Ctrl-C asked the run to stop: nothing more is measured.
    private var stopping: Bool { interruptRequested.load(ordering: .relaxed) }

    /// Memory is measured in one scenario: loopback when it runs.
    private static func memoryScenario(_ scenarios: [ScenarioKind]) -> ScenarioKind? {
        scenarios.contains(.loopback) ? ScenarioKind.loopback : scenarios.first
    }

    private var memoryScenario: ScenarioKind? { Runner.memoryScenario(options.scenarios) }

    /// mem-idle and mem-conns share one start of each forwarder: one step of the progress.
    private static func idleStep(_ groups: [FigureGroup]) -> String? {
        let both = groups.filter { $0 == .memoryIdle || $0 == .memoryConnections }
        return both.isEmpty ? nil : both.map(\.rawValue).joined(separator: "+")
    }

    /// The steps of a run in the order `run` takes them, for the progress line.
    static func steps(_ options: RunOptions) -> [ProgressStep] {
        let memory = memoryScenario(options.scenarios)
        var steps: [ProgressStep] = []
        for kind in options.scenarios {
            for rep in 1...options.repetitions {
                var phases = options.groups.filter { !$0.isMemory }.map(\.rawValue)
                if kind == memory {
                    let groups = options.groups.filter(\.isMemory)
                    phases += [idleStep(groups), groups.contains(.memoryPorts) ? "mem-ports" : nil].compactMap { $0 }
                }
                steps += phases.map { ProgressStep(scenario: kind.rawValue, repetition: rep, phase: $0) }
            }
        }
        return steps
    }

    private func step(_ s: Scenario, _ phase: String) -> ProgressStep {
        ProgressStep(scenario: s.kind.rawValue, repetition: repetition, phase: phase)
    }

    func run() {
        defer { progress.finish() }
        for kind in options.scenarios {
            if stopping { break }
            let scenario: Scenario
            do {
                scenario = kind == .loopback ? .loopback() : try .netns()
            } catch {
                log("[\(kind)] cannot set up: \(error)")
                noteAll(kind, "scenario \(kind): \(error)")
                progress.skip(scenario: kind.rawValue)
                continue
            }
            defer { scenario.destroy() }
            do {
                backends = try Backends(ip: scenario.backendIP, ns: scenario.containerNS)
            } catch {
                log("[\(kind)] backends: \(error)")
                noteAll(kind, "backends: \(error)")
                progress.skip(scenario: kind.rawValue)
                continue
            }
            defer {
                backends?.stop()
                backends = nil
            }
            let loadGroups = options.groups.filter { !$0.isMemory }
            let memoryGroups = kind == memoryScenario ? options.groups.filter(\.isMemory) : []
            if kind != memoryScenario {
                // Memory is measured once, in the first scenario; leave its rows out here.
                for g in options.groups where g.isMemory {
                    for f in options.plan.figures(g) {
                        for t in options.targets {
                            results.note(
                                kind,
                                f.id,
                                t.name,
                                "measured in the \(memoryScenario?.rawValue ?? "") scenario",
                                unsupported: true
                            )
                        }
                    }
                }
            }
            for rep in 1...options.repetitions {
                if stopping { break }
                repetition = rep
                if !loadGroups.isEmpty { loadPhase(scenario, loadGroups) }
                if !memoryGroups.isEmpty && !stopping { memoryPhase(scenario, memoryGroups) }
            }
        }
    }

    private func noteAll(_ kind: ScenarioKind, _ text: String) {
        for g in options.groups {
            for f in options.plan.figures(g) {
                for t in options.targets { results.note(kind, f.id, t.name, text, unsupported: false) }
            }
        }
    }

    private func placement(_ s: Scenario) -> Placement {
        Placement(namespace: s.hostNS, workDirectory: options.workDirectory)
    }

    private func ports(_ count: Int, _ s: Scenario) throws -> [UInt16] {
        try Net.freePorts(count, ip: s.listenIP, ns: s.hostNS, start: &portCursor)
    }

    // MARK: load

    private enum Backend: Int, CaseIterable { case sink, echo, udpSink, udpEcho }

    private func loadPhase(_ s: Scenario, _ groups: [FigureGroup]) {
        guard let backends, let first = groups.first else { return }
        progress.begin(step(s, first.rawValue), target: nil)
        let targets: [SocketAddress] = [backends.sink, backends.echo, backends.udpSink, backends.udpEcho]
        let protos: [Proto] = [.tcp, .tcp, .udp, .udp]
        var running: [(Target, Forwarding)] = []
        defer { for (_, f) in running { f.stop() } }
        for t in options.targets {
            do {
                let hostPorts = try ports(4, s)
                let mappings = (0..<4).map {
                    Mapping(proto: protos[$0], hostIP: s.listenIP, hostPort: hostPorts[$0], target: targets[$0])
                }
                running.append((t, Launcher.start(t, mappings, at: placement(s), berthThreads: options.berthThreads)))
            } catch {
                let f = Forwarding(target: t, count: 4)
                for i in 0..<4 { f.reasons[i] = "\(error)" }
                running.append((t, f))
            }
        }
        for group in groups {
            if stopping { return }
            progress.begin(step(s, group.rawValue), target: nil)
            if group == .tcpFairness {
                fairPhase(s)
                continue
            }
            let backend: Backend =
                switch group {
                case .tcpBulk: .sink
                case .tcpConnections, .tcpRequestResponse: .echo
                case .udpDatagrams: .udpSink
                default: .udpEcho
                }
            for (i, (t, f)) in running.enumerated() {
                if stopping { return }
                progress.begin(step(s, group.rawValue), target: t.name, index: i + 1, count: running.count)
                let figures = options.plan.figures(group)
                guard let address = f.addresses[backend.rawValue] else {
                    let why = f.reasons[backend.rawValue] ?? "not started"
                    for fig in figures {
                        results.note(s.kind, fig.id, t.name, why, unsupported: f.unsupported[backend.rawValue])
                    }
                    continue
                }
                do {
                    try measure(group, s, t, f, address)
                } catch {
                    // A forwarder that died says why on stderr.
                    let dead = f.children.first { $0.hasExited }.map { " (\(t.name) exited: \($0.stderrTail()))" } ?? ""
                    log("  \(group.rawValue) \(t.name): \(error)\(dead)")
                    for fig in figures { results.note(s.kind, fig.id, t.name, "\(error)\(dead)", unsupported: false) }
                }
            }
        }
    }

    private func measure(
        _ group: FigureGroup,
        _ s: Scenario,
        _ t: Target,
        _ f: Forwarding,
        _ address: SocketAddress
    ) throws {
        let d = options.duration
        let ns = s.clientNS
        let k = s.kind
        func percentiles(_ prefix: String, _ r: LatencyResult) throws {
            guard r.completed > 0 else { throw BenchError("no response at all") }
            for (suffix, q) in [("p50", 0.5), ("p99", 0.99), ("p999", 0.999)] {
                results.add(k, "\(prefix)-\(suffix)", t.name, Double(r.histogram.valueAtPercentile(q * 100)) / 1000)
            }
        }
        switch group {
        case .tcpBulk:
            for streams in [1, 8] {
                let cpu = f.cpuSeconds()
                let (bps, bytes) = try Load.bulk(to: address, streams: streams, seconds: d, ns: ns)
                results.add(k, "tcp-bulk-\(streams)", t.name, bps / 1e9)
                recordCPU(k, "tcp-bulk-\(streams)", t, f, since: cpu, operations: Double(bytes), per: 1e9)
                log("  tcp-bulk-\(streams) \(t.name): \(fmt(bps / 1e9)) Gbit/s")
            }
        case .tcpConnections:
            let cpu = f.cpuSeconds()
            let r = try Load.connectionRate(
                to: address,
                concurrency: options.plan.connectConcurrency,
                seconds: d,
                ns: ns
            )
            results.add(k, "tcp-connrate", t.name, r.perSecond)
            recordCPU(k, "tcp-connrate", t, f, since: cpu, operations: Double(r.completed), per: 1000)
            results.countErrors(k, "tcp-connrate", t.name, r.errors)
            log("  tcp-connrate \(t.name): \(fmt(r.perSecond)) conn/s\(r.errors > 0 ? ", \(r.errors) failed" : "")")
        case .tcpRequestResponse:
            let one = try Pinning.onOneCPU(forwarder: f, backend: "backend-echo") {
                try Load.requestResponse(to: address, connections: 1, seconds: d, ns: ns)
            }
            try percentiles("tcp-rr-1", one)
            results.countErrors(k, "tcp-rr-1-p50", t.name, one.errors)
            let cpu = f.cpuSeconds()
            let many = try Load.requestResponse(to: address, connections: 64, seconds: d, ns: ns)
            recordCPU(k, "tcp-rr-64", t, f, since: cpu, operations: Double(many.completed), per: 1000)
            try percentiles("tcp-rr-64", many)
            results.add(k, "tcp-rr-64-rps", t.name, many.perSecond)
            results.countErrors(k, "tcp-rr-64-rps", t.name, many.errors)
            log(
                "  tcp-rr \(t.name): 1 conn p50 \(fmt(Double(one.histogram.valueAtPercentile(50)) / 1000)) µs; 64 conns \(fmt(many.perSecond)) req/s"
            )
        case .udpDatagrams:
            guard let backends else { return }
            let before = backends.udpSinkCount
            let cpu = f.cpuSeconds()
            let r = try Load.udpFlood(to: address, seconds: d, ns: ns)
            sleepSeconds(0.3)  // what is still queued in the forwarder arrives
            let delivered = backends.udpSinkCount - before
            guard delivered > 0 else { throw BenchError("no datagram arrived (\(r.sent) sent)") }
            // Per datagram delivered: what the forwarder read and could not send is its cost too.
            recordCPU(k, "udp-pps", t, f, since: cpu, operations: Double(delivered), per: 1000)
            results.add(k, "udp-pps", t.name, Double(delivered) / r.seconds)
            results.add(k, "udp-loss", t.name, 100 * (1 - Double(delivered) / Double(max(r.sent, 1))))
            log(
                "  udp-pps \(t.name): \(fmt(Double(delivered) / r.seconds))/s of \(fmt(Double(r.sent) / r.seconds))/s sent"
            )
        case .udpDNS:
            try measureDNS(k, t, f, address, ns: ns)
        case .udpRequestResponse:
            let r = try Pinning.onOneCPU(forwarder: f, backend: "backend-uecho") {
                try Load.udpRequestResponse(to: address, seconds: d, ns: ns)
            }
            try percentiles("udp-rr", r)
            results.countErrors(k, "udp-rr-p50", t.name, r.errors)
            log("  udp-rr \(t.name): p50 \(fmt(Double(r.histogram.valueAtPercentile(50)) / 1000)) µs, \(r.errors) lost")
        default:
            break
        }
    }

    /// `figure`'s CPU row: the forwarder's CPU seconds since `before`, per `per` operations.
    private func recordCPU(
        _ k: ScenarioKind,
        _ figure: String,
        _ t: Target,
        _ f: Forwarding,
        since before: Double,
        operations: Double,
        per: Double
    ) {
        let id = figure + CPUCost.idSuffix
        if t.isDirect {
            results.note(k, id, t.name, "no forwarder", unsupported: true)
            return
        }
        guard let ms = CPUCost.milliseconds(cpuSeconds: f.cpuSeconds() - before, operations: operations, per: per)
        else {
            results.note(k, id, t.name, "nothing forwarded", unsupported: false)
            return
        }
        results.add(k, id, t.name, ms)
    }

    // MARK: fairness

    /// tcp-fair: every target started afresh with two mappings to the fair backend (berth with
    /// `--fair-threads`, 1 unless set: then the ping and the downloads would share one loop; peers
    /// with their defaults: docker-proxy runs a process per port), the ping through the first
    /// alone, then beside 1 and 8 downloads through the second.
    private func fairPhase(_ s: Scenario) {
        guard let backends else { return }
        let k = s.kind
        let rows = options.plan.figures(.tcpFairness)
        for (i, t) in options.targets.enumerated() {
            if stopping { return }
            let phase = step(s, FigureGroup.tcpFairness.rawValue)
            progress.begin(phase, target: t.name, index: i + 1, count: options.targets.count)
            let f: Forwarding
            do {
                let mappings = try ports(2, s).map {
                    Mapping(proto: .tcp, hostIP: s.listenIP, hostPort: $0, target: backends.fair)
                }
                f = Launcher.start(t, mappings, at: placement(s), berthThreads: options.plan.fairThreads)
            } catch {
                for r in rows { results.note(k, r.id, t.name, "\(error)", unsupported: false) }
                continue
            }
            defer { f.stop() }
            guard let address = f.addresses[0], let bulkAddress = f.addresses[1] else {
                let i = f.addresses[0] == nil ? 0 : 1
                for r in rows {
                    results.note(k, r.id, t.name, f.reasons[i] ?? "not started", unsupported: f.unsupported[i])
                }
                continue
            }
            do {
                var summary: [String] = []
                for (mode, streams) in [("alone", 0), ("bulk", 1), ("bulk8", 8)] {
                    let r = try Load.fairness(
                        to: address,
                        bulkAddress: bulkAddress,
                        streams: streams,
                        seconds: options.duration,
                        ns: s.clientNS
                    )
                    guard r.latency.completed > 0 else { throw BenchError("no ping answered") }
                    let h = r.latency.histogram
                    results.add(k, "tcp-fair-\(mode)-p50", t.name, Double(h.valueAtPercentile(50)) / 1000)
                    results.add(k, "tcp-fair-\(mode)-p99", t.name, Double(h.valueAtPercentile(99)) / 1000)
                    results.add(k, "tcp-fair-\(mode)-max", t.name, Double(h.max) / 1000)
                    results.countErrors(k, "tcp-fair-\(mode)-p50", t.name, r.latency.errors)
                    if streams > 0 { results.add(k, "tcp-fair-\(mode)-gbps", t.name, r.bulkBitsPerSecond / 1e9) }
                    summary.append(
                        "\(mode) p50 \(fmt(Double(h.valueAtPercentile(50)) / 1000)) max \(fmt(Double(h.max) / 1000)) µs"
                    )
                    if streams > 0 { summary.append("download \(fmt(r.bulkBitsPerSecond / 1e9)) Gbit/s") }
                }
                log("  tcp-fair \(t.name): " + summary.joined(separator: ", "))
            } catch {
                let dead = f.children.first { $0.hasExited }.map { " (\(t.name) exited: \($0.stderrTail()))" } ?? ""
                log("  tcp-fair \(t.name): \(error)\(dead)")
                for r in rows { results.note(k, r.id, t.name, "\(error)\(dead)", unsupported: false) }
            }
        }
    }

    // MARK: memory

    private func memoryPhase(_ s: Scenario, _ groups: [FigureGroup]) {
        guard let backends else { return }
        let k = s.kind
        let forwarders = options.targets.filter { !$0.isDirect && !$0.isYardstick }
        for t in options.targets where t.isDirect || t.isYardstick {
            let why =
                t.isDirect ? "no forwarder" : "a yardstick for throughput (SwiftPM links the Swift runtime into it)"
            for g in groups {
                for f in options.plan.figures(g) { results.note(k, f.id, t.name, why, unsupported: true) }
            }
        }
        if let idle = Runner.idleStep(groups) {
            for (i, t) in forwarders.enumerated() {
                if stopping { return }
                progress.begin(step(s, idle), target: t.name, index: i + 1, count: forwarders.count)
                let rows =
                    (groups.contains(.memoryIdle) ? options.plan.figures(.memoryIdle) : [])
                    + (groups.contains(.memoryConnections) ? options.plan.figures(.memoryConnections) : [])
                do {
                    let f = Launcher.start(
                        t,
                        [Mapping(proto: .tcp, hostIP: s.listenIP, hostPort: try ports(1, s)[0], target: backends.echo)],
                        at: placement(s),
                        berthThreads: options.berthThreads
                    )
                    defer { f.stop() }
                    guard let address = f.addresses[0] else {
                        for r in rows {
                            results.note(k, r.id, t.name, f.reasons[0] ?? "not started", unsupported: f.unsupported[0])
                        }
                        continue
                    }
                    sleepSeconds(0.2)
                    let idle = f.memory().kib
                    if groups.contains(.memoryIdle) { results.add(k, "mem-idle", t.name, idle) }
                    if groups.contains(.memoryConnections) {
                        let n = options.plan.heldConnections
                        let held = try Load.hold(n, to: address, ns: s.clientNS)
                        sleepSeconds(0.3)
                        let busy = f.memory().kib
                        for fd in held { close(fd) }
                        results.add(k, "mem-conns", t.name, busy)
                        results.add(k, "mem-per-conn", t.name, (busy - idle) / Double(n))
                        log("  mem \(t.name): idle \(fmt(idle)) KiB, \(n) conns \(fmt(busy)) KiB")
                    }
                } catch {
                    log("  mem \(t.name): \(error)")
                    for r in rows { results.note(k, r.id, t.name, "\(error)", unsupported: false) }
                }
            }
        }
        if groups.contains(.memoryPorts) {
            var rss: [String: [Int: Double]] = [:]
            for (c, n) in options.plan.portCounts.enumerated() {
                for (i, t) in forwarders.enumerated() {
                    if stopping { return }
                    progress.begin(
                        step(s, FigureGroup.memoryPorts.rawValue),
                        target: "\(t.name), \(n) port\(n == 1 ? "" : "s")",
                        index: c * forwarders.count + i + 1,
                        count: options.plan.portCounts.count * forwarders.count
                    )
                    let ids = ["mem-ports-\(n)", "ready-ports-\(n)"]
                    if t.processPerMapping && n > options.maxProcesses {
                        for id in ids {
                            results.note(
                                k,
                                id,
                                t.name,
                                "skipped: \(n) processes is over --max-processes \(options.maxProcesses)",
                                unsupported: true
                            )
                        }
                        continue
                    }
                    do {
                        let hostPorts = try ports(n, s)
                        let mappings = hostPorts.map {
                            Mapping(proto: .tcp, hostIP: s.listenIP, hostPort: $0, target: backends.echo)
                        }
                        let f = Launcher.start(t, mappings, at: placement(s), berthThreads: options.berthThreads)
                        defer { f.stop() }
                        if let bad = f.reasons.firstIndex(where: { $0 != nil }) {
                            for id in ids {
                                results.note(k, id, t.name, f.reasons[bad]!, unsupported: f.unsupported[bad])
                            }
                            continue
                        }
                        sleepSeconds(0.2)
                        let m = f.memory().kib
                        rss[t.name, default: [:]][n] = m
                        results.add(k, "mem-ports-\(n)", t.name, m)
                        results.add(k, "ready-ports-\(n)", t.name, f.readySeconds * 1000)
                        log(
                            "  ports \(n) \(t.name): \(fmt(m)) KiB in \(f.children.count) process\(f.children.count == 1 ? "" : "es"), ready in \(fmt(f.readySeconds * 1000)) ms"
                        )
                    } catch {
                        for id in ids { results.note(k, id, t.name, "\(error)", unsupported: false) }
                    }
                }
            }
            for t in forwarders {
                guard let first = options.plan.portCounts.first, let base = rss[t.name]?[first],
                    let (n, top) = rss[t.name]?.filter({ $0.key > first }).max(by: { $0.key < $1.key })
                else {
                    results.note(k, "mem-per-port", t.name, "needs two port counts measured", unsupported: false)
                    continue
                }
                results.add(k, "mem-per-port", t.name, (top - base) / Double(n - first))
            }
        }
    }
}

/// Numbers as the tables show them (BenchReport's formatNumber).
func fmt(_ v: Double) -> String { formatNumber(v) }
