// Where a run is: the step (scenario, repetition, figure group) and target it is at, the time
// since it began, and an estimate of the time left from the steps already done (a group's own
// earlier durations when it has any, else the mean of every step so far). The clock is the
// caller's: every call takes `now` in seconds.

public struct ProgressStep: Equatable, Sendable {
    public var scenario: String
    public var repetition: Int
    /// A figure group, or the few the runner measures together ("mem-idle+mem-conns").
    public var phase: String

    public init(scenario: String, repetition: Int, phase: String) {
        self.scenario = scenario
        self.repetition = repetition
        self.phase = phase
    }
}

public struct Progress: Sendable {
    public let steps: [ProgressStep]
    public let repetitions: Int
    let start: Double
    /// Index into `steps` of the step under way, when one is.
    private(set) var current: Int?
    private var currentStart = 0.0
    private var currentTarget: (name: String, index: Int, count: Int)?
    private var done: Set<Int> = []
    private var skipped: Set<Int> = []
    private var durations: [String: [Double]] = [:]

    public init(steps: [ProgressStep], repetitions: Int, start: Double) {
        self.steps = steps
        self.repetitions = repetitions
        self.start = start
    }

    /// Marks `step` as under way at `target` (index from 1 of `count`; nil while the step sets
    /// up); the step before it, if another, is done.
    public mutating func begin(_ step: ProgressStep, target: String?, index: Int = 1, count: Int = 1, now: Double) {
        if let c = current, steps[c] == step {
            currentTarget = target.map { ($0, index, count) }
            return
        }
        finishCurrent(now: now)
        guard let i = steps.indices.first(where: { steps[$0] == step && !done.contains($0) }) else { return }
        current = i
        currentStart = now
        currentTarget = target.map { ($0, index, count) }
    }

    /// The step under way is done (the end of a run).
    public mutating func finishCurrent(now: Double) {
        guard let c = current else { return }
        done.insert(c)
        durations[steps[c].phase, default: []].append(now - currentStart)
        current = nil
    }

    /// Steps of a scenario that cannot run (it could not be set up): not counted as left to do.
    public mutating func skip(scenario: String) {
        for i in steps.indices where steps[i].scenario == scenario && !done.contains(i) && i != current {
            skipped.insert(i)
        }
    }

    func estimate(_ phase: String) -> Double? {
        if let d = durations[phase], !d.isEmpty { return d.reduce(0, +) / Double(d.count) }
        let all = durations.values.flatMap { $0 }
        return all.isEmpty ? nil : all.reduce(0, +) / Double(all.count)
    }

    /// Seconds left, or nil before any step is done.
    public func eta(now: Double) -> Double? {
        var left = 0.0
        for i in steps.indices where !done.contains(i) && !skipped.contains(i) {
            guard let e = estimate(steps[i].phase) else { return nil }
            left += i == current ? max(0, e - (now - currentStart)) : e
        }
        return left
    }

    /// The progress line: `loopback 1/3, tcp-bulk (step 2/18), berth (2/8), 0:42 elapsed, ETA 5:10`.
    public func line(now: Double) -> String {
        let counted = steps.indices.filter { !skipped.contains($0) }
        guard let c = current else {
            return "\(done.count)/\(counted.count) steps done, \(Progress.clock(now - start)) elapsed"
        }
        let s = steps[c]
        let position = (counted.firstIndex(of: c) ?? 0) + 1
        var text = "\(s.scenario) \(s.repetition)/\(repetitions), \(s.phase) (step \(position)/\(counted.count))"
        if let t = currentTarget { text += ", \(t.name) (\(t.index)/\(t.count))" }
        text += ", \(Progress.clock(now - start)) elapsed, ETA \(eta(now: now).map(Progress.clock) ?? "unknown")"
        return text
    }

    /// The line for a log that is not a terminal, one per step.
    public func plainLine(now: Double) -> String { "progress: " + line(now: now) }

    /// What the run has not measured, by scenario and repetition, for an interrupted run.
    public func notMeasured() -> [String] {
        var out: [String] = []
        var scenarios: [String] = []
        for s in steps where !scenarios.contains(s.scenario) { scenarios.append(s.scenario) }
        for scenario in scenarios {
            let mine = steps.indices.filter { steps[$0].scenario == scenario && !skipped.contains($0) }
            let left = mine.filter { !done.contains($0) }
            if left.isEmpty { continue }
            if left.count == mine.count && current.map({ !mine.contains($0) }) ?? true {
                out.append("\(scenario): everything")
                continue
            }
            for rep in 1...max(1, repetitions) {
                let these = left.filter { steps[$0].repetition == rep }
                if these.isEmpty { continue }
                let all = mine.filter { steps[$0].repetition == rep }
                if these.count == all.count && current.map({ !these.contains($0) }) ?? true {
                    out.append("\(scenario) repetition \(rep)/\(repetitions): everything")
                    continue
                }
                let phases = these.map { i -> String in
                    if i == current, let t = currentTarget { return "\(steps[i].phase) from \(t.name) on" }
                    return steps[i].phase
                }
                out.append("\(scenario) repetition \(rep)/\(repetitions): \(phases.joined(separator: ", "))")
            }
        }
        return out
    }

    /// 42 → "0:42", 3725 → "1:02:05".
    public static func clock(_ seconds: Double) -> String {
        let total = seconds.isFinite ? Int(exactly: max(0, seconds).rounded()) ?? 0 : 0
        let (h, m, s) = (total / 3600, total / 60 % 60, total % 60)
        let two = { (v: Int) in v < 10 ? "0\(v)" : "\(v)" }
        return h > 0 ? "\(h):\(two(m)):\(two(s))" : "\(m):\(two(s))"
    }
}
