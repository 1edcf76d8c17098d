// CPU time per operation (issue 22): what a forwarder's own processes spent (utime + stime) on a
// number of operations, and the table that sets each forwarder beside HAProxy against the
// issue's targets. The runner measures; the arithmetic and the table are here so the tests can
// check them without a forwarder.

public enum CPUCost {
    /// Figures whose id ends in this are CPU per operation (their `ratioTo` is the peer they are
    /// held against, HAProxy, or nginx for UDP, which HAProxy does not forward).
    public static let idSuffix = "-cpu"
    /// Issue 22: berth's CPU per operation below this × HAProxy's.
    public static let cpuTarget = 0.8
    /// Issue 22: keep-alive requests/s with 64 connections at least this × HAProxy's.
    public static let requestRateTarget = 1.2
    /// The figure the request-rate target is read from.
    public static let requestRateFigure = "tcp-rr-64-rps"

    /// Milliseconds of CPU per `per` operations; nil when no operation was done (nothing to
    /// divide by) or the CPU time is negative (a process gone between the two readings).
    public static func milliseconds(cpuSeconds: Double, operations: Double, per: Double) -> Double? {
        guard operations > 0, cpuSeconds >= 0, per > 0 else { return nil }
        return cpuSeconds * 1000 * per / operations
    }

    /// From the text of /proc/PID/stat: utime + stime (the process's own, all its threads, the
    /// ended ones too) and cutime + cstime (the children it has waited for), in clock ticks.
    /// The command name may hold spaces and parentheses: the fields are counted from its last ')'.
    public static func ticks(procStat text: String) -> (own: UInt64, children: UInt64)? {
        guard let close = text.lastIndex(of: ")") else { return nil }
        // After "pid (comm) ": state ppid pgrp session tty tpgid flags minflt cminflt majflt
        // cmajflt utime stime cutime cstime ...
        let fields = text[text.index(after: close)...].split(separator: " ")
        guard fields.count > 14, let utime = UInt64(fields[11]), let stime = UInt64(fields[12]),
            let cutime = UInt64(fields[13]), let cstime = UInt64(fields[14])
        else { return nil }
        return (utime + stime, cutime + cstime)
    }

    /// Each repetition's value ÷ the base's in the same repetition (a run records every
    /// target's values in repetition order); none when they cannot be paired (a repetition
    /// missing on one side, or a base of 0).
    public static func pairedRatios(_ values: [Double], _ base: [Double]) -> [Double] {
        guard values.count == base.count, !base.isEmpty, !base.contains(0) else { return [] }
        return zip(values, base).map { $0 / $1 }
    }

    /// `median (min–max)`, or the median alone for one value; "n/a" for none.
    public static func cell(_ values: [Double], prefix: String = "") -> String {
        guard let s = Statistics.summary(values) else { return "n/a" }
        let text = prefix + formatNumber(s.median)
        return s.count > 1 ? text + " (\(prefix)\(formatNumber(s.min))–\(prefix)\(formatNumber(s.max)))" : text
    }

    /// Whether the ratios meet a target: every repetition's, only some, or none.
    public static func verdict(_ ratios: [Double], target: Double, below: Bool) -> String {
        guard !ratios.isEmpty else { return "n/a" }
        let met = ratios.filter { below ? $0 < target : $0 >= target }.count
        if met == ratios.count { return "yes" }
        return met == 0 ? "no" : "in \(met) of \(ratios.count) repetitions"
    }

    /// The table RESULTS.md shows for a scenario: every CPU-per-operation figure, a column per
    /// forwarder that has one (direct has no forwarder), `target` ÷ the figure's peer per
    /// repetition, and whether that meets the issue's target; then the request rate against
    /// HAProxy's. Empty when the run has no CPU figure.
    public static func table(_ scenario: BenchScenario, targets: [String], target: String = "berth") -> String {
        let figures = scenario.figures.filter { $0.id.hasSuffix(idSuffix) }
        guard !figures.isEmpty else { return "" }
        let columns = targets.filter { t in
            t != "direct" && figures.contains { !values($0.targets[t]).isEmpty }
        }
        var text =
            "| figure | unit | " + columns.joined(separator: " | ")
            + " | \(target) ÷ peer | < \(formatNumber(cpuTarget))× |\n"
        text += "| --- | --- |" + String(repeating: " ---: |", count: columns.count) + " --- | --- |\n"
        func row(_ f: BenchFigure, _ ratioText: String, _ verdictText: String) -> String {
            var line = "| \(f.title) | \(f.unit) |"
            for c in columns { line += " \(cell(values(f.targets[c]))) |" }
            return line + " \(ratioText) | \(verdictText) |\n"
        }
        for f in figures {
            let ratios = pairedRatios(values(f.targets[target]), values(f.targets[f.ratioTo]))
            let ratioText = ratios.isEmpty ? "n/a" : "\(cell(ratios, prefix: "×")) to \(f.ratioTo)"
            text += row(f, ratioText, verdict(ratios, target: cpuTarget, below: true))
        }
        if let rate = scenario.figures.first(where: { $0.id == requestRateFigure }) {
            let ratios = pairedRatios(values(rate.targets[target]), values(rate.targets["haproxy"]))
            text += "\nKeep-alive requests/s with 64 connections, \(target) ÷ haproxy per repetition: "
            text += ratios.isEmpty ? "n/a" : cell(ratios, prefix: "×")
            text +=
                " (target ≥ \(formatNumber(requestRateTarget))×: \(verdict(ratios, target: requestRateTarget, below: false))).\n"
        }
        return text
    }

    static func values(_ cell: BenchCell?) -> [Double] {
        guard let cell else { return [] }
        if let v = cell.values, !v.isEmpty { return v }
        return cell.median.map { [$0] } ?? []
    }
}
