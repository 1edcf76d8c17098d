// The progress line on stderr (BenchReport's Progress says what it reads): on a terminal one
// line redrawn in place, the runner's own log lines printed above it; otherwise, for CI logs,
// a plain line at every step.

import BenchReport
import CBench
import Glibc

final class ProgressDisplay {
    private var progress: Progress
    private let terminal = isatty(2) == 1
    private var drawn = false

    init(steps: [ProgressStep], repetitions: Int) {
        progress = Progress(steps: steps, repetitions: repetitions, start: ProgressDisplay.now())
    }

    static func now() -> Double { Double(nowNanos()) / 1e9 }

    func begin(_ step: ProgressStep, target: String?, index: Int = 1, count: Int = 1) {
        progress.begin(step, target: target, index: index, count: count, now: ProgressDisplay.now())
        // A log gets a line per target; a step's setup (no target yet) shows on a terminal only.
        if terminal || target != nil { draw() }
    }

    func skip(scenario: String) { progress.skip(scenario: scenario) }

    func log(_ text: String) {
        clear()
        emit(text + "\n")
        if terminal { draw() }
    }

    /// The end of the run: the last step is done and the live line goes.
    func finish() {
        progress.finishCurrent(now: ProgressDisplay.now())
        clear()
    }

    func notMeasured() -> [String] { progress.notMeasured() }

    private func draw() {
        let now = ProgressDisplay.now()
        guard terminal else { return emit(progress.plainLine(now: now) + "\n") }
        let line = progress.line(now: now)
        let columns = Int(CBench_terminal_columns(2))
        emit("\r\u{1B}[2K" + (columns > 1 ? String(line.prefix(columns - 1)) : line))
        drawn = true
    }

    private func clear() {
        if drawn { emit("\r\u{1B}[2K") }
        drawn = false
    }

    private func emit(_ text: String) {
        var text = text
        text.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
    }
}
