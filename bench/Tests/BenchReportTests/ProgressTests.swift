import BenchReport
import Testing

struct ProgressTests {
    static let steps = ["loopback", "netns"].flatMap { s in
        (1...2).flatMap { rep in
            ["tcp-bulk", "tcp-rr"].map { ProgressStep(scenario: s, repetition: rep, phase: $0) }
        }
    }

    /// The line a log that is not a terminal gets at every step, on a clock of our own.
    @Test func thePlainLineAtEveryStep() {
        var p = Progress(steps: ProgressTests.steps, repetitions: 2, start: 100)
        p.begin(ProgressTests.steps[0], target: nil, now: 100)
        #expect(p.plainLine(now: 100) == "progress: loopback 1/2, tcp-bulk (step 1/8), 0:00 elapsed, ETA unknown")
        p.begin(ProgressTests.steps[0], target: "berth", index: 2, count: 3, now: 104)
        #expect(
            p.plainLine(now: 104)
                == "progress: loopback 1/2, tcp-bulk (step 1/8), berth (2/3), 0:04 elapsed, ETA unknown"
        )
        // tcp-bulk took 10 s; tcp-rr has no time of its own yet, so every step counts 10 s.
        p.begin(ProgressTests.steps[1], target: "direct", index: 1, count: 3, now: 110)
        #expect(
            p.plainLine(now: 110)
                == "progress: loopback 1/2, tcp-rr (step 2/8), direct (1/3), 0:10 elapsed, ETA 1:10"
        )
        // tcp-rr took 30 s: 3 × 10 + 3 × 30 left.
        p.begin(ProgressTests.steps[2], target: nil, now: 140)
        #expect(p.eta(now: 140) == 120)
        #expect(p.line(now: 145) == "loopback 2/2, tcp-bulk (step 3/8), 0:45 elapsed, ETA 1:55")
        // A scenario that cannot be set up is not counted.
        p.skip(scenario: "netns")
        #expect(p.line(now: 145) == "loopback 2/2, tcp-bulk (step 3/4), 0:45 elapsed, ETA 0:35")
        p.finishCurrent(now: 150)
        #expect(p.line(now: 3_700) == "3/4 steps done, 1:00:00 elapsed")
    }

    @Test func whatAnInterruptedRunDidNotMeasure() {
        var p = Progress(steps: ProgressTests.steps, repetitions: 2, start: 0)
        p.begin(ProgressTests.steps[0], target: "direct", now: 0)
        p.begin(ProgressTests.steps[1], target: "berth", index: 2, count: 3, now: 5)
        #expect(
            p.notMeasured() == [
                "loopback repetition 1/2: tcp-rr from berth on",
                "loopback repetition 2/2: everything",
                "netns: everything",
            ]
        )
        var fresh = Progress(steps: ProgressTests.steps, repetitions: 2, start: 0)
        #expect(fresh.notMeasured() == ["loopback: everything", "netns: everything"])
        fresh.begin(ProgressTests.steps[0], target: "direct", index: 1, count: 2, now: 0)
        #expect(fresh.notMeasured().first == "loopback repetition 1/2: tcp-bulk from direct on, tcp-rr")
    }

    @Test func clock() {
        #expect(Progress.clock(0) == "0:00")
        #expect(Progress.clock(59.6) == "1:00")
        #expect(Progress.clock(3725) == "1:02:05")
        #expect(Progress.clock(-3) == "0:00")
        #expect(Progress.clock(.infinity) == "0:00")
    }
}
