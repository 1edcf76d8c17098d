// `berth-bench compare OLD.json NEW.json`: every figure of both runs, target by target, with
// both medians, their ratio, and whether the change is beyond the noise of the two runs'
// repetitions (the exact Mann–Whitney U test on the per-repetition values, see Statistics).
// A change is called better or worse only when p ≤ alpha and the medians moved by at least
// `minChangePercent`: with 3 repetitions a side the smallest p there is is 0.1, so the test
// alone would call one row in ten of two runs of the same code a change.

public struct CompareOptions: Sendable {
    /// Two-sided significance level of the test.
    public var alpha = 0.1
    /// Smallest change of the median, in percent, that is called better or worse.
    public var minChangePercent = 5.0
    /// Only these targets (nil: every target of either run).
    public var targets: [String]?
    /// A row worse by at least this many percent, beyond the noise, fails the comparison.
    public var failOnRegressionPercent: Double?
    /// Compare each repetition's ratio to the figure's base (direct) instead of the values: a
    /// machine that is slower as a whole in one run moves every target and the base alike, and
    /// the ratios not at all.
    public var relative = false

    public init() {}
}

public struct ComparisonRow: Sendable {
    public enum Verdict: Equatable, Sendable {
        case better, worse
        /// p > alpha: the repetitions of the two runs overlap too much to tell.
        case withinNoise
        /// p ≤ alpha, but the medians moved by less than the smallest change that counts.
        case smallChange
        /// Too few repetitions for any p to reach alpha.
        case cannotTell
        case onlyOld, onlyNew
    }

    public var scenario: String
    public var figure: BenchFigure
    public var target: String
    public var old: Statistics.Summary?
    public var new: Statistics.Summary?
    /// new median ÷ old median − 1 (±infinity when the old median is 0 and the new is not).
    public var change: Double?
    public var p: Double?
    public var verdict: Verdict

    /// Whether the change goes the figure's better way (higher or lower).
    public var improves: Bool {
        guard let change else { return false }
        return figure.higherIsBetter ? change > 0 : change < 0
    }
}

public struct Comparison: Sendable {
    public let old: BenchDocument
    public let new: BenchDocument
    public let options: CompareOptions
    public let rows: [ComparisonRow]
    /// Scenario and figure ids only one of the runs has.
    public let onlyOld: [String]
    public let onlyNew: [String]

    public init(old: BenchDocument, new: BenchDocument, options: CompareOptions = CompareOptions()) {
        self.old = old
        self.new = new
        self.options = options
        var rows: [ComparisonRow] = []
        var onlyOld: [String] = []
        var onlyNew: [String] = []
        let targets = (new.targets + old.targets.filter { !new.targets.contains($0) }).filter {
            options.targets?.contains($0) ?? true
        }
        let scenarioNames =
            new.scenarios.map(\.name)
            + old.scenarios.map(\.name).filter { name in
                !new.scenarios.contains { $0.name == name }
            }
        for name in scenarioNames {
            let o = old.scenarios.first { $0.name == name }?.figures ?? []
            let n = new.scenarios.first { $0.name == name }?.figures ?? []
            onlyOld += o.filter { f in !n.contains { $0.id == f.id } }.map { "\(name) \($0.id)" }
            onlyNew += n.filter { f in !o.contains { $0.id == f.id } }.map { "\(name) \($0.id)" }
            for figure in n {
                guard let before = o.first(where: { $0.id == figure.id }) else { continue }
                for t in targets {
                    if let row = Comparison.row(name, before, figure, t, options) { rows.append(row) }
                }
            }
        }
        self.rows = rows
        self.onlyOld = onlyOld
        self.onlyNew = onlyNew
    }

    static func values(_ cell: BenchCell?) -> [Double] {
        guard let cell else { return [] }
        if let v = cell.values, !v.isEmpty { return v }
        return cell.median.map { [$0] } ?? []
    }

    /// Each repetition's value ÷ the base's in the same repetition; none when they cannot be
    /// paired (a repetition missing on one side, or a base of 0).
    static func ratios(_ figure: BenchFigure, _ target: String) -> [Double] {
        let mine = values(figure.targets[target])
        let base = values(figure.targets[figure.ratioTo])
        guard mine.count == base.count, !base.contains(0) else { return [] }
        return zip(mine, base).map { $0 / $1 }
    }

    static func row(
        _ scenario: String,
        _ before: BenchFigure,
        _ after: BenchFigure,
        _ target: String,
        _ options: CompareOptions
    ) -> ComparisonRow? {
        if options.relative && target == after.ratioTo { return nil }
        let a = options.relative ? ratios(before, target) : values(before.targets[target])
        let b = options.relative ? ratios(after, target) : values(after.targets[target])
        let old = Statistics.summary(a)
        let new = Statistics.summary(b)
        var row = ComparisonRow(
            scenario: scenario,
            figure: after,
            target: target,
            old: old,
            new: new,
            change: nil,
            p: nil,
            verdict: .withinNoise
        )
        guard let old, let new else {
            if old == nil && new == nil { return nil }
            row.verdict = old == nil ? .onlyNew : .onlyOld
            return row
        }
        let change =
            old.median != 0
            ? new.median / old.median - 1 : new.median == 0 ? 0 : new.median > 0 ? Double.infinity : -Double.infinity
        row.change = change
        let p = Statistics.mannWhitneyP(a, b)
        row.p = p
        if Statistics.smallestP(a.count, b.count) > options.alpha {
            row.verdict = .cannotTell
        } else if p > options.alpha {
            row.verdict = .withinNoise
        } else if abs(change) * 100 < options.minChangePercent {
            row.verdict = .smallChange
        } else {
            row.verdict = row.improves ? .better : .worse
        }
        return row
    }

    /// Rows worse beyond the noise by at least `failOnRegressionPercent` (none when it is not set).
    public var regressions: [ComparisonRow] {
        guard let limit = options.failOnRegressionPercent else { return [] }
        return rows.filter { $0.verdict == .worse && abs($0.change ?? 0) * 100 >= limit }
    }

    /// 0, or 1 when `failOnRegressionPercent` is set and a row regressed that much.
    public var exitStatus: Int32 { regressions.isEmpty ? 0 : 1 }

    // MARK: text

    public static func describe(_ e: BenchEnvironment) -> String {
        // Runs from before berthCommit have the commit in berth's version line ("... at 735d1cc").
        let fromVersion = e.versions["berth"].flatMap { v in
            v.firstRange(of: " at ").map { String(v[$0.upperBound...]) }
        }
        var parts = [e.date, "berth \(e.berthCommit.map { String($0.prefix(12)) } ?? fromVersion ?? "unknown")"]
        parts.append("\(plainNumber(e.duration)) s × \(e.repetitions)")
        if let s = e.scenarios { parts.append(s.joined(separator: "+")) }
        parts.append("\(e.nproc) CPUs (\(e.cpu))")
        parts.append("kernel \(e.kernel)")
        if let l = e.loadAverage { parts.append("load \(l)") }
        return parts.joined(separator: ", ")
    }

    func verdictText(_ r: ComparisonRow) -> String {
        let by = r.change.map { $0.isInfinite ? "from 0" : "\(fixed(abs($0) * 100, 1))%" } ?? ""
        switch r.verdict {
        case .better: return "**better** by \(by)"
        case .worse: return "**worse** by \(by)"
        case .withinNoise: return "within the noise"
        case .smallChange: return "beyond the noise, under \(plainNumber(options.minChangePercent))%"
        case .cannotTell: return "can't tell (\(r.old?.count ?? 0) and \(r.new?.count ?? 0) repetitions)"
        case .onlyOld: return "only in old"
        case .onlyNew: return "only in new"
        }
    }

    static func cell(_ s: Statistics.Summary?) -> String {
        guard let s else { return "-" }
        return s.count > 1
            ? "\(formatNumber(s.median)) (\(formatNumber(s.min))–\(formatNumber(s.max)))" : formatNumber(s.median)
    }

    public func text(oldName: String = "old", newName: String = "new") -> String {
        var text = "# berth-bench compare\n\n"
        text += "- old: `\(oldName)`: \(Comparison.describe(old.environment))\n"
        text += "- new: `\(newName)`: \(Comparison.describe(new.environment))\n"
        let (o, n) = (old.environment, new.environment)
        var differs: [String] = []
        if o.cpu != n.cpu || o.nproc != n.nproc { differs.append("CPU") }
        if o.kernel != n.kernel { differs.append("kernel") }
        if o.duration != n.duration { differs.append("duration") }
        if o.repetitions != n.repetitions { differs.append("repetitions") }
        if !differs.isEmpty {
            text += "- note: the runs differ in \(differs.joined(separator: ", ")): not only berth changed\n"
        }
        for (run, e) in [("old", o), ("new", n)] where e.notMeasured?.isEmpty == false {
            text += "- note: the \(run) run was interrupted (not measured: \(e.notMeasured!.joined(separator: "; ")))\n"
        }
        text +=
            "\nBeyond the noise: exact two-sided Mann–Whitney U on the repetitions, p ≤ \(plainNumber(options.alpha)); "
            + "better or worse: that and a median moved by at least \(plainNumber(options.minChangePercent))%. "
            + "With 3 repetitions a side the smallest p is 0.1 (every repetition of one run beyond every one of the other).\n"
        if options.relative {
            text +=
                "\nRelative: each repetition's value ÷ the base's (direct; memory: docker-proxy) in the same repetition; "
                + "rows whose repetitions cannot be paired are left out.\n"
        }
        var scenario = ""
        var figure = ""
        let header = ["target", "old median (min–max)", "new median (min–max)", "new ÷ old", "p", "verdict"]
        var table: [[String]] = []
        func flush() {
            if !table.isEmpty { text += markdownTable(header, table, rightAligned: [1, 2, 3, 4]) }
            table = []
        }
        for r in rows {
            if r.scenario != scenario {
                flush()
                scenario = r.scenario
                figure = ""
                text += "\n## \(scenario)\n"
            }
            if r.figure.id != figure {
                flush()
                figure = r.figure.id
                let unit = options.relative ? "÷ \(r.figure.ratioTo) per repetition" : r.figure.unit
                text +=
                    "\n### \(r.figure.title) (\(unit), \(r.figure.higherIsBetter ? "higher" : "lower") is better)\n\n"
            }
            let ratio = r.change.flatMap { $0.isInfinite ? nil : "×" + formatNumber($0 + 1) } ?? "-"
            table.append([
                r.target, Comparison.cell(r.old), Comparison.cell(r.new), ratio,
                r.p.map { fixed($0, 2) } ?? "-", verdictText(r),
            ])
        }
        flush()
        if !onlyOld.isEmpty { text += "\nOnly in old: \(onlyOld.joined(separator: ", "))\n" }
        if !onlyNew.isEmpty { text += "\nOnly in new: \(onlyNew.joined(separator: ", "))\n" }
        text += "\n## Summary\n\n"
        let count = { (v: ComparisonRow.Verdict) in self.rows.filter { $0.verdict == v }.count }
        text +=
            "\(rows.count) rows: \(count(.better)) better, \(count(.worse)) worse, \(count(.withinNoise)) within the noise, "
            + "\(count(.smallChange)) beyond the noise but under \(plainNumber(options.minChangePercent))%, "
            + "\(count(.cannotTell)) with too few repetitions to tell.\n"
        for v in [ComparisonRow.Verdict.worse, .better] {
            let list = rows.filter { $0.verdict == v }
            if list.isEmpty { continue }
            text += "\n\(v == .worse ? "Worse" : "Better"):\n"
            for r in list {
                text += "- \(r.scenario) \(r.figure.id) \(r.target): \(verdictText(r)) (p \(fixed(r.p ?? 1, 2)))\n"
            }
        }
        if let limit = options.failOnRegressionPercent {
            let bad = regressions
            text +=
                bad.isEmpty
                ? "\nNo regression of \(plainNumber(limit))% or more beyond the noise.\n"
                : "\nFAIL: \(bad.count) regression\(bad.count == 1 ? "" : "s") of \(plainNumber(limit))% or more beyond the noise.\n"
            if count(.cannotTell) > 0 {
                text += "(\(count(.cannotTell)) rows had too few repetitions to fail on.)\n"
            }
        }
        return text
    }
}

/// A markdown table with its columns padded, readable as text too.
func markdownTable(_ header: [String], _ rows: [[String]], rightAligned: Set<Int>) -> String {
    var width = header.map(\.count)
    for row in rows {
        for (i, c) in row.enumerated() where i < width.count { width[i] = max(width[i], c.count) }
    }
    func line(_ cells: [String]) -> String {
        var parts: [String] = []
        for (i, c) in cells.enumerated() {
            let pad = String(repeating: " ", count: max(0, width[i] - c.count))
            parts.append(rightAligned.contains(i) ? pad + c : c + pad)
        }
        return "| " + parts.joined(separator: " | ") + " |\n"
    }
    var text = line(header)
    text +=
        "|"
        + width.enumerated().map { i, w in
            " " + String(repeating: "-", count: max(3, w - 1)) + (rightAligned.contains(i) ? ":" : "-") + " "
        }.joined(separator: "|") + "|\n"
    for row in rows { text += line(row) }
    return text
}
