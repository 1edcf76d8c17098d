// Tables and JSON: every figure as the median of its repetitions, the spread (min–max),
// and the ratio to `direct` (to docker-proxy for memory, where direct has no forwarder).

import BenchReport
import Foundation
import Glibc

struct Summary {
    var median: Double
    var min: Double
    var max: Double
    var values: [Double]

    init?(_ values: [Double]?) {
        guard let values, let s = Statistics.summary(values) else { return nil }
        median = s.median
        min = s.min
        max = s.max
        self.values = values
    }
}

extension BenchEnvironment {
    static func read(
        targets: [Target],
        root: String,
        duration: Double,
        repetitions: Int,
        scenarios: [ScenarioKind]
    ) -> BenchEnvironment {
        let formatter = ISO8601DateFormatter()
        let cpuinfo = ProcFS.read("/proc/cpuinfo") ?? ""
        let model =
            cpuinfo.split(separator: "\n").first { $0.hasPrefix("model name") }
            .map { String($0.split(separator: ":", maxSplits: 1).last ?? "").trimmingWhitespace() } ?? "unknown"
        let memory =
            (ProcFS.read("/proc/meminfo") ?? "").split(separator: "\n").first { $0.hasPrefix("MemTotal") }
            .map { line -> String in
                let kib = Double(line.split(separator: " ").dropFirst().first ?? "0") ?? 0
                return "\(Int(exactly: (kib / 1024 / 1024).rounded()) ?? 0) GiB"
            } ?? "unknown"
        var versions: [String: String] = [:]
        for t in targets { versions[t.name] = Discovery.version(of: t, root: root) }
        let load = (ProcFS.read("/proc/loadavg") ?? "").split(separator: " ").prefix(3).joined(separator: " ")
        return BenchEnvironment(
            date: formatter.string(from: Date()),
            nproc: sysconf(Int32(_SC_NPROCESSORS_ONLN)),
            cpu: model,
            kernel: Discovery.output("uname -r"),
            memory: memory,
            versions: versions,
            duration: duration,
            repetitions: repetitions,
            command: CommandLine.arguments.dropFirst().joined(separator: " "),
            berthCommit: Discovery.commit(root) ?? "unknown",
            scenarios: scenarios.map(\.rawValue),
            loadAverage: load.isEmpty ? nil : load
        )
    }
}

struct Report {
    let results: Results
    var environment: BenchEnvironment
    let targetNames: [String]
    let figureList: [Figure]
    let scenarios: [ScenarioKind]
    let missingTargets: [(String, String)]

    init(options: RunOptions, results: Results, environment: BenchEnvironment) {
        self.results = results
        self.environment = environment
        targetNames = options.targets.map(\.name)
        figureList = options.groups.flatMap { options.plan.figures($0) }
        scenarios = options.scenarios
        missingTargets = options.missingTargets
    }

    /// The report of an earlier run, from its JSON (`--render`).
    init(json data: Data) throws {
        let root = try JSONDecoder().decode(BenchDocument.self, from: data)
        environment = root.environment
        targetNames = root.targets
        missingTargets = []
        let results = Results()
        var scenarios: [ScenarioKind] = []
        var figures: [Figure] = []
        for scenario in root.scenarios {
            guard let kind = ScenarioKind(rawValue: scenario.name) else { continue }
            scenarios.append(kind)
            for f in scenario.figures {
                if figures.count < scenario.figures.count && !figures.contains(where: { $0.id == f.id }) {
                    let group =
                        f.group.flatMap(FigureGroup.init(rawValue:))
                        ?? FigureGroup.allCases.first { f.id.hasPrefix($0.rawValue) }
                        ?? (f.id.hasPrefix("ready-ports") || f.id == "mem-per-port"
                            ? .memoryPorts
                            : f.id == "mem-per-conn"
                                ? .memoryConnections : f.id == "udp-loss" ? .udpDatagrams : .tcpBulk)
                    figures.append(
                        Figure(
                            id: f.id,
                            group: group,
                            title: f.title,
                            unit: f.unit,
                            higherIsBetter: f.higherIsBetter,
                            peer: f.id.hasSuffix(CPUCost.idSuffix) ? f.ratioTo : nil
                        )
                    )
                }
                for (target, cell) in f.targets {
                    for v in cell.values ?? [] { results.add(kind, f.id, target, v) }
                    if let note = cell.note {
                        results.note(kind, f.id, target, note, unsupported: cell.unsupported ?? false)
                    }
                    if let e = cell.errors { results.countErrors(kind, f.id, target, e) }
                }
            }
        }
        self.results = results
        self.scenarios = scenarios
        figureList = figures
    }

    private func figures() -> [Figure] { figureList }

    private var lastPortCount: Int {
        figureList.compactMap { $0.id.hasPrefix("mem-ports-") ? Int($0.id.dropFirst("mem-ports-".count)) : nil }.max()
            ?? 0
    }

    func summary(_ s: ScenarioKind, _ figure: String, _ target: String) -> Summary? {
        Summary(results.values[Results.Key(scenario: s, figure: figure, target: target)])
    }

    func ratio(_ s: ScenarioKind, _ f: Figure, _ target: String) -> Double? {
        guard target != f.ratioBase, let mine = summary(s, f.id, target),
            let base = summary(s, f.id, f.ratioBase), base.median != 0
        else { return nil }
        return mine.median / base.median
    }

    // MARK: markdown

    func markdown() -> String {
        var text = ""
        for s in scenarios {
            text += "### Scenario: \(s.rawValue)\n\n"
            text +=
                s == .loopback
                ? "Client, forwarder and backend on 127.0.0.1.\n\n"
                : "Client namespace → host namespace (forwarder on 198.18.11.1) → bridge and veth → container namespace (backend on 198.18.10.2).\n\n"
            var footnotes: [String] = []
            func footnote(_ text: String) -> Int {
                let short = String(text.prefix(300))
                if let i = footnotes.firstIndex(of: short) { return i + 1 }
                footnotes.append(short)
                return footnotes.count
            }
            text += "| figure | unit | " + targetNames.joined(separator: " | ") + " |\n"
            text += "| --- | --- |" + String(repeating: " ---: |", count: targetNames.count) + "\n"
            for f in figures() {
                if f.group.isMemory
                    && results.notes.keys.contains(where: {
                        $0.scenario == s && $0.figure == f.id && results.notes[$0]!.text.hasPrefix("measured in the")
                    })
                {
                    continue
                }
                var row = "| \(f.title) | \(f.unit)\(f.higherIsBetter ? " ↑" : " ↓") |"
                for t in targetNames {
                    if let sum = summary(s, f.id, t) {
                        var cell = fmt(sum.median)
                        if sum.values.count > 1 { cell += " (\(fmt(sum.min))–\(fmt(sum.max)))" }
                        if let r = ratio(s, f, t) { cell += " ×\(fmt(r))" }
                        row += " \(cell) |"
                    } else if let note = results.notes[Results.Key(scenario: s, figure: f.id, target: t)] {
                        row += " n/a [\(footnote(note.text))] |"
                    } else {
                        row += " - |"
                    }
                }
                text += row + "\n"
            }
            text +=
                "\nEach cell: median of the repetitions (min–max) ×ratio to `direct`; memory rows ×ratio to `docker-proxy`; CPU rows ×ratio to `haproxy` (UDP: `nginx`). ↑ higher is better, ↓ lower is better.\n"
            if !footnotes.isEmpty {
                text += "\n"
                for (i, n) in footnotes.enumerated() { text += "\(i + 1). \(n.replacingAll("|", "/"))\n" }
            }
            text += "\n"
        }
        if !missingTargets.isEmpty {
            text +=
                "Not measured: " + missingTargets.map { "\($0.0) (\($0.1))" }.joined(separator: "; ") + "\n\n"
        }
        return text
    }

    /// berth against direct, docker-proxy and the best other peer, per figure.
    func headline(_ s: ScenarioKind) -> String {
        // berth-kernel gets a column where it has figures (the netns scenario).
        let kernel = figures().contains { summary(s, $0.id, "berth-kernel") != nil }
        var text = "| figure | direct | berth | berth ÷ direct |" + (kernel ? " berth-kernel ÷ direct |" : "")
        text += " docker-proxy | berth ÷ docker-proxy | best other peer |\n"
        text += "| --- | ---: | ---: | ---: |" + (kernel ? " ---: |" : "") + " ---: | ---: | --- |\n"
        let peers = targetNames.filter { !$0.hasPrefix("berth") && $0 != "direct" }
        func v(_ x: Double?) -> String { x.map(fmt) ?? "n/a" }
        func r(_ a: Double?, _ b: Double?) -> String {
            guard let a, let b, b != 0 else { return "n/a" }
            return "×" + fmt(a / b)
        }
        for f in figures() where !f.id.hasPrefix("ready-ports") || f.id.hasSuffix("-\(lastPortCount)") {
            let direct = summary(s, f.id, "direct")?.median
            let berth = summary(s, f.id, "berth")?.median
            let dp = summary(s, f.id, "docker-proxy")?.median
            if berth == nil && direct == nil { continue }
            var best: (String, Double)?
            for p in peers {
                guard let v = summary(s, f.id, p)?.median else { continue }
                if best == nil || (f.higherIsBetter ? v > best!.1 : v < best!.1) { best = (p, v) }
            }
            // A ratio of percentages (loss) says little; the values do.
            let ratios = f.hasDirect && f.unit != "%"
            text +=
                "| \(f.title) (\(f.unit)) | \(f.hasDirect ? v(direct) : "-") | \(v(berth)) | \(ratios ? r(berth, direct) : "-") |"
            if kernel { text += " \(ratios ? r(summary(s, f.id, "berth-kernel")?.median, direct) : "-") |" }
            text +=
                " \(v(dp)) | \(f.unit == "%" ? "-" : r(berth, dp)) | \(best.map { "\($0.0) \(fmt($0.1))" } ?? "n/a") |\n"
        }
        return text
    }

    /// The micro-benchmark output without the build's lines and terminal colours.
    static func cleanMicro(_ text: String) -> String {
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        if let start = lines.firstIndex(where: { $0.hasPrefix("Host '") }) { lines.removeFirst(start) }
        return lines.map { line in
            var out = ""
            var skipping = false
            for c in line {
                if c == "\u{1B}" {
                    skipping = true
                    continue
                }
                if skipping {
                    if c.isLetter { skipping = false }
                    continue
                }
                out.append(c)
            }
            return out
        }.joined(separator: "\n")
    }

    /// RESULTS.md: the machine and the run, the headlines, the charts (paths relative to it), every figure.
    func resultsFile(micro: String?, charts: [(group: String, path: String)] = []) -> String {
        var text = "# berth benchmark results\n\n"
        text +=
            "Written by `make bench` (`berth-bench \(environment.command)`); see `bench/README.md` for what each figure measures.\n\n"
        if let missing = environment.notMeasured, !missing.isEmpty {
            text += "**Interrupted** before the end; not measured: \(missing.joined(separator: "; ")).\n\n"
        }
        text += "- date: \(environment.date)\n"
        text +=
            "- machine: \(environment.nproc) CPUs (\(environment.cpu)), \(environment.memory), kernel \(environment.kernel)\n"
        text += "- load average at the start: \(environment.loadAverage ?? "unknown") (1, 5, 15 minutes)\n"
        text += "- berth commit: \(environment.berthCommit ?? "unknown")\n"
        text += "- scenarios: \((environment.scenarios ?? scenarios.map(\.rawValue)).joined(separator: ", "))\n"
        text +=
            "- run: \(plainNumber(environment.duration)) s per measurement, \(environment.repetitions) repetitions, interleaved (every target in each repetition)\n"
        text += "- versions:\n"
        for t in targetNames { text += "  - \(t): \(environment.versions[t] ?? "-")\n" }
        text +=
            "\n## Headline (\(scenarios.first?.rawValue ?? ""))\n\n"
            + headline(scenarios.first ?? .loopback) + "\n"
        if scenarios.count > 1 {
            for s in scenarios.dropFirst() { text += "## Headline (\(s.rawValue))\n\n" + headline(s) + "\n" }
        }
        for s in scenarios {
            guard let scenario = document().scenarios.first(where: { $0.name == s.rawValue }) else { continue }
            let table = CPUCost.table(scenario, targets: targetNames)
            if table.isEmpty { continue }
            text += "## CPU per operation (\(s.rawValue))\n\n"
            text +=
                "Each forwarder's own CPU time (utime + stime of all its processes, and of the children they reaped) over a measurement, divided by what it forwarded in it. Medians (min–max) of the repetitions; berth ÷ the peer per repetition (HAProxy; nginx for UDP). Issue 22's targets: below \(formatNumber(CPUCost.cpuTarget))× HAProxy's CPU on each, keep-alive requests/s at least \(formatNumber(CPUCost.requestRateTarget))× HAProxy's.\n\n"
            text += table + "\n"
        }
        if !charts.isEmpty {
            text +=
                "## Charts\n\nEach bar: a target's median as a ratio to `direct` (memory: to `docker-proxy`), whiskers from its smallest to its largest repetition; berth in orange.\n\n"
            for c in charts { text += "![\(c.group)](\(c.path))\n\n" }
        }
        text += "## All figures\n\n" + markdown()
        if let micro {
            text +=
                "## Micro-benchmarks (`swift package --package-path bench benchmark`)\n\n```\n\(Report.cleanMicro(micro).trimmingWhitespace())\n```\n"
        }
        return text
    }

    // MARK: JSON

    func document() -> BenchDocument {
        var out: [BenchScenario] = []
        for s in scenarios {
            var figs: [BenchFigure] = []
            for f in figures() {
                var cells: [String: BenchCell] = [:]
                for t in targetNames {
                    let key = Results.Key(scenario: s, figure: f.id, target: t)
                    let sum = summary(s, f.id, t)
                    cells[t] = BenchCell(
                        median: sum?.median,
                        min: sum?.min,
                        max: sum?.max,
                        values: sum?.values,
                        ratio: ratio(s, f, t),
                        errors: results.errors[key],
                        note: sum == nil ? results.notes[key]?.text : nil,
                        unsupported: sum == nil ? results.notes[key]?.unsupported : nil
                    )
                }
                figs.append(
                    BenchFigure(
                        id: f.id,
                        group: f.group.rawValue,
                        title: f.title,
                        unit: f.unit,
                        higherIsBetter: f.higherIsBetter,
                        ratioTo: f.ratioBase,
                        targets: cells
                    )
                )
            }
            out.append(BenchScenario(name: s.rawValue, figures: figs))
        }
        return BenchDocument(environment: environment, targets: targetNames, scenarios: out)
    }

    func json() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return try encoder.encode(document())
    }

    /// Cells with neither a value nor a reason the target cannot do it.
    func missing() -> [String] {
        var list: [String] = []
        for s in scenarios {
            for f in figures() {
                for t in targetNames {
                    let key = Results.Key(scenario: s, figure: f.id, target: t)
                    if results.values[key]?.isEmpty == false { continue }
                    if let note = results.notes[key], note.unsupported { continue }
                    list.append("\(s.rawValue) \(f.id) \(t): \(results.notes[key]?.text ?? "no value")")
                }
            }
        }
        return list
    }
}
