// berth-bench: end-to-end figures of berth against no forwarder and against its peers.
//
//   swift run -c release --package-path bench berth-bench                 # everything found here
//   swift run -c release --package-path bench berth-bench --smoke         # tiny, berth and direct
//   ... --targets direct,berth,docker-proxy --figures tcp-bulk,tcp-rr --duration 5 --repeat 5
//   ... --peer 'myproxy=/opt/myproxy --listen {host_ip}:{host_port} --to {target_ip}:{target_port} --proto {proto}'
//   swift run -c release --package-path bench berth-bench compare OLD.json NEW.json

import ArgumentParser
import BenchReport
import Foundation
import Glibc

/// The repository root: this file is bench/Sources/BerthBench/BerthBench.swift.
let repositoryRoot: String = {
    var parts = "\(#filePath)".split(separator: "/", omittingEmptySubsequences: false)
    parts.removeLast(4)
    return parts.joined(separator: "/")
}()

@main
struct BerthBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "berth-bench",
        abstract:
            "End-to-end benchmarks: berth against no forwarder (direct) and against docker-proxy, socat, HAProxy, nginx.",
        discussion: """
            Figures (--figures, comma-separated; default all):
              tcp-bulk      TCP bulk Gbit/s, 1 and 8 streams
              tcp-connrate  new TCP connections per second (connect, 64 B request, response, close)
              tcp-rr        keep-alive request/response latency p50/p99/p99.9, 1 and 64 connections; req/s with 64
              udp-pps       UDP 64-byte datagrams per second delivered, and loss
              udp-rr        UDP request/response latency p50/p99/p99.9
              udp-dns       DNS-style load: one-shot exchanges, each from a new source port;
                            answers/s and the forwarder's peak open descriptors
              tcp-fair      1-byte ping every ms p50/p99/max, alone and beside 1 and 8 bulk
                            downloads through another port of the same forwarder
                            (berth --threads 1, or --fair-threads)
              mem-idle      forwarder RSS, idle, one port
              mem-conns     forwarder RSS with --held-connections connections, KiB per connection
              mem-ports     forwarder RSS with --ports published ports, KiB per port, time until ready

            Targets (--targets, comma-separated; default: every one found here):
              direct, berth, docker-proxy, socat, haproxy, haproxy-splice, nginx,
              berth-kernel (berth --mode kernel: nftables DNAT, netns scenario only),
              and any --peer NAME.
            A --peer template runs once per mapping with {proto} {host_ip} {host_port}
            {target_ip} {target_port} filled in; it is ready when its ports are bound.

            Scenarios: loopback (all on 127.0.0.1) and netns (client, host and container
            namespaces the runner makes and deletes; needs root). Memory is measured in the
            first scenario only.

            Progress goes to stderr. Ctrl-C stops after the measurement under way and writes
            what was measured (and what was not); a second Ctrl-C quits at once.
            `berth-bench compare OLD.json NEW.json` compares two runs' --json files.
            """,
        subcommands: [Compare.self]
    )

    @Option(help: "Seconds per measurement.")
    var duration: Double?

    @Option(name: .customLong("repeat"), help: "Repetitions of every figure (each runs every target).")
    var repetitions: Int?

    @Option(help: "Comma-separated targets.")
    var targets: String?

    @Option(help: "Comma-separated figure groups.")
    var figures: String?

    @Option(help: "loopback, netns or both (default: both as root, else loopback).")
    var scenario: String?

    @Flag(help: "Tiny durations, berth and direct only, small memory figures; fails if any figure is missing.")
    var smoke = false

    @Option(help: ArgumentHelp("Write the figures as JSON to this file.", valueName: "file"))
    var json: String?

    @Option(
        help: ArgumentHelp("Write a full results file (machine, versions, tables) to this file.", valueName: "file")
    )
    var results: String?

    @Option(
        help: ArgumentHelp(
            "Write one SVG chart per figure group into this directory (RESULTS.md links them).",
            valueName: "dir"
        )
    )
    var charts: String?

    @Option(help: ArgumentHelp("Micro-benchmark output to include in --results.", valueName: "file"))
    var micro: String?

    @Option(
        help: ArgumentHelp(
            "Measure nothing: print (and --results) the report of an earlier run's --json file.",
            valueName: "file"
        )
    )
    var render: String?

    @Option(help: ArgumentHelp("The berth binary.", valueName: "path"))
    var berth: String?

    @Option(help: ArgumentHelp("Another forwarder: NAME=COMMAND TEMPLATE.", valueName: "name=template"))
    var peer: [String] = []

    @Option(help: "--threads for the built-in berth in every figure but tcp-fair; default: berth's own.")
    var berthThreads: Int?

    @Option(help: "--threads for the built-in berth in tcp-fair (default 1; 0: berth's own).")
    var fairThreads = 1

    @Option(help: "Connections held open for mem-conns.")
    var heldConnections: Int?

    @Option(help: "One-shot exchanges for udp-dns (default 20000; 500 with --smoke).")
    var dnsExchanges: Int?

    @Option(help: "Comma-separated published-port counts for mem-ports.")
    var ports: String?

    @Option(help: "Most processes a one-process-per-port peer may start for mem-ports.")
    var maxProcesses = 1000

    @Option(help: "Connections in flight for tcp-connrate.")
    var concurrency = 32

    func validate() throws {
        if let duration, !(duration > 0) { throw ValidationError("--duration must be more than 0") }
        if let repetitions, repetitions < 1 { throw ValidationError("--repeat must be at least 1") }
        if let berthThreads, berthThreads < 1 { throw ValidationError("--berth-threads must be at least 1") }
        if fairThreads < 0 { throw ValidationError("--fair-threads must be at least 0") }
        if let scenario, !["loopback", "netns", "both"].contains(scenario) {
            throw ValidationError("--scenario is loopback, netns or both")
        }
    }

    func run() throws {
        if let render {
            let report = try Report(json: try Data(contentsOf: URL(fileURLWithPath: render)))
            print(report.markdown(), terminator: "")
            try writeOutputs(report)
            return
        }
        raiseDescriptorLimit()
        signal(SIGPIPE, SIG_IGN)
        var template = Array("/tmp/berth-bench.XXXXXX".utf8CString)
        guard let dir = mkdtemp(&template) else { throw BenchError("mkdtemp: \(errnoText())") }
        let workDirectory = String(cString: dir)
        Cleanup.shared.setWorkDirectory(workDirectory)
        Cleanup.shared.installSignalHandlers()
        defer { Cleanup.shared.all() }

        let berthPath = berth ?? "\(repositoryRoot)/.build/release/berth"
        var wanted: [String]
        var explicitTargets = false
        if let targets {
            wanted = targets.split(separator: ",").map { String($0).trimmingWhitespace() }
            explicitTargets = true
        } else {
            wanted =
                smoke
                ? ["direct", "berth"]
                : Discovery.builtinNames
                    + peer.compactMap { $0.split(separator: "=", maxSplits: 1).first.map(String.init) }
        }
        if !wanted.contains("direct") { wanted.insert("direct", at: 0) }
        var chosen: [Target] = []
        var missing: [(String, String)] = []
        for name in wanted {
            if let spec = peer.first(where: { $0.hasPrefix(name + "=") }) {
                chosen.append(Target(name: name, kind: .template(command: String(spec.dropFirst(name.count + 1)))))
                continue
            }
            switch Discovery.builtin(name, berthPath: berthPath) {
            case .success(let t): chosen.append(t)
            case .failure(let e):
                if explicitTargets || name == "berth" {
                    missing.append((name, e.description))
                } else {
                    missing.append((name, e.description))
                }
            }
        }
        if missing.contains(where: { $0.0 == "berth" }) && smoke {
            throw BenchError(missing.first { $0.0 == "berth" }!.1)
        }
        var groups = FigureGroup.allCases
        if let figures {
            groups = try figures.split(separator: ",").map { name in
                guard let g = FigureGroup(rawValue: String(name).trimmingWhitespace()) else {
                    throw ValidationError(
                        "unknown figure group \(name); one of \(FigureGroup.allCases.map(\.rawValue).joined(separator: ", "))"
                    )
                }
                return g
            }
        }
        var scenarios: [ScenarioKind]
        switch scenario ?? (Scenario.netnsUnavailable == nil ? "both" : "loopback") {
        case "netns": scenarios = [.netns]
        case "both": scenarios = [.loopback, .netns]
        default: scenarios = [.loopback]
        }
        if scenarios.contains(.netns), let why = Scenario.netnsUnavailable {
            FileHandle.standardError.write("berth-bench: \(why): loopback only\n".data(using: .utf8)!)
            scenarios.removeAll { $0 == .netns }
            if scenarios.isEmpty { scenarios = [.loopback] }
        }
        let portCounts = try (ports ?? (smoke ? "1,100" : "1,100,1000,10000")).split(separator: ",").map {
            text -> Int in
            guard let n = Int(text), n > 0 else { throw ValidationError("--ports takes positive counts") }
            return n
        }
        let options = RunOptions(
            duration: duration ?? (smoke ? 0.25 : 3),
            repetitions: repetitions ?? (smoke ? 1 : 3),
            groups: groups,
            scenarios: scenarios,
            targets: chosen,
            missingTargets: missing,
            plan: FigurePlan(
                heldConnections: heldConnections ?? (smoke ? 100 : 1000),
                portCounts: portCounts.sorted(),
                connectConcurrency: concurrency,
                dnsExchanges: max(1, dnsExchanges ?? (smoke ? 500 : 20_000)),
                fairThreads: fairThreads == 0 ? nil : fairThreads
            ),
            maxProcesses: maxProcesses,
            workDirectory: workDirectory,
            berthThreads: berthThreads
        )
        let environment = BenchEnvironment.read(
            targets: chosen,
            root: repositoryRoot,
            duration: options.duration,
            repetitions: options.repetitions,
            scenarios: scenarios
        )
        let begin = nowNanos()
        let runner = Runner(options: options)
        runner.run()
        var report = Report(options: options, results: runner.results, environment: environment)
        let interrupted = interruptRequested.load(ordering: .relaxed)
        if interrupted { report.environment.notMeasured = runner.progress.notMeasured() }
        print(report.markdown(), terminator: "")
        print("(\(fmt(Double(nowNanos() - begin) / 1e9)) s)")
        try writeOutputs(report)
        if interrupted {
            let missing = report.environment.notMeasured ?? []
            FileHandle.standardError.write(
                "berth-bench: interrupted; not measured: \(missing.joined(separator: "; "))\n".data(using: .utf8)!
            )
            throw ExitCode(130)
        }
        if smoke {
            let absent = report.missing()
            if !absent.isEmpty {
                print("berth-bench --smoke: \(absent.count) figure(s) missing:")
                for a in absent { print("  \(a)") }
                throw ExitCode(1)
            }
            print("berth-bench --smoke: every figure was produced")
        }
    }
}

extension BerthBench {
    /// --json, --charts and --results, in that order (the results file links the charts).
    func writeOutputs(_ report: Report) throws {
        if let json {
            try report.json().write(to: URL(fileURLWithPath: json))
        }
        var written: [(group: String, path: String)] = []
        if let charts {
            try FileManager.default.createDirectory(atPath: charts, withIntermediateDirectories: true)
            for chart in Chart.render(report.document()) {
                let path = "\(charts)/\(chart.group).svg"
                try writeFile(path, chart.svg)
                written.append((chart.group, path))
            }
        }
        if let results {
            let microText = micro.flatMap { ProcFS.read($0) }
            let links = written.map { ($0.group, relativePath($0.path, from: results)) }
            try writeFile(results, report.resultsFile(micro: microText, charts: links))
        }
    }
}

/// `path` as a link from the file `from`: relative when both lie below the same directory.
func relativePath(_ path: String, from file: String) -> String {
    let directory = file.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/")
    if directory.isEmpty { return path }
    return path.hasPrefix(directory + "/") ? String(path.dropFirst(directory.count + 1)) : path
}
