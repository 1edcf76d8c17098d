import BenchReport
import Testing

struct CPUCostTests {
    /// 0.25 CPU seconds over 50,000 requests is 5 ms per 1,000; over 2 GB, 125 ms per GB.
    @Test func perOperation() {
        #expect(CPUCost.milliseconds(cpuSeconds: 0.25, operations: 50_000, per: 1000) == 5)
        #expect(CPUCost.milliseconds(cpuSeconds: 0.25, operations: 2e9, per: 1e9) == 125)
        // Nothing forwarded, or a process gone between the readings: no value rather than 0 or inf.
        #expect(CPUCost.milliseconds(cpuSeconds: 0.25, operations: 0, per: 1000) == nil)
        #expect(CPUCost.milliseconds(cpuSeconds: -0.01, operations: 10, per: 1000) == nil)
    }

    /// utime stime cutime cstime are the 14th to 17th fields; a command name with spaces and
    /// a ')' of its own does not shift them.
    @Test func ticksFromProcStat() throws {
        let plain = "4242 (berth) S 1 4242 4242 0 -1 4194560 812 0 0 0 37 12 5 2 20 0 3 0 99 1 2 3"
        let t = try #require(CPUCost.ticks(procStat: plain))
        #expect(t.own == 49)
        #expect(t.children == 7)
        let odd = "77 (my (odd) proc) R 1 77 77 0 -1 0 0 0 0 0 100 200 300 400 20 0 1 0 5"
        let u = try #require(CPUCost.ticks(procStat: odd))
        #expect(u.own == 300)
        #expect(u.children == 700)
        #expect(CPUCost.ticks(procStat: "12 (short) S 1 2 3") == nil)
        #expect(CPUCost.ticks(procStat: "no parenthesis at all") == nil)
    }

    @Test func ratiosArePairedByRepetition() {
        #expect(CPUCost.pairedRatios([2, 3, 8], [4, 4, 10]) == [0.5, 0.75, 0.8])
        #expect(CPUCost.pairedRatios([2, 3], [4, 4, 10]).isEmpty)  // a repetition missing on one side
        #expect(CPUCost.pairedRatios([2, 3], [4, 0]).isEmpty)
        #expect(CPUCost.cell([0.5, 0.75, 0.8], prefix: "×") == "×0.75 (×0.50–×0.80)")
        #expect(CPUCost.cell([12.34]) == "12.3")
        #expect(CPUCost.cell([]) == "n/a")
        #expect(CPUCost.verdict([0.5, 0.75, 0.79], target: 0.8, below: true) == "yes")
        #expect(CPUCost.verdict([0.5, 0.85, 0.79], target: 0.8, below: true) == "in 2 of 3 repetitions")
        #expect(CPUCost.verdict([0.8, 0.9], target: 0.8, below: true) == "no")
        #expect(CPUCost.verdict([1.2, 1.3], target: 1.2, below: false) == "yes")
        #expect(CPUCost.verdict([], target: 1.2, below: false) == "n/a")
    }

    static func figure(
        _ id: String,
        _ ratioTo: String,
        _ cells: [String: [Double]],
        unit: String = "CPU ms/1000 req"
    )
        -> BenchFigure
    {
        BenchFigure(
            id: id,
            group: "tcp-rr",
            title: id,
            unit: unit,
            higherIsBetter: id.hasSuffix("rps"),
            ratioTo: ratioTo,
            targets: cells.mapValues { BenchCell(values: $0) ?? BenchCell() }
        )
    }

    /// The RESULTS.md table: a column per forwarder with a CPU figure (direct has none), berth ÷
    /// the figure's peer per repetition against the 0.8× target, then the request rate against 1.2×.
    @Test func theTable() {
        let scenario = BenchScenario(
            name: "loopback",
            figures: [
                CPUCostTests.figure(
                    "tcp-rr-64-rps",
                    "direct",
                    [
                        "direct": [120_000, 125_000, 130_000], "berth": [60_000, 66_000, 62_000],
                        "haproxy": [50_000, 50_000, 50_000],
                    ],
                    unit: "req/s"
                ),
                CPUCostTests.figure(
                    "tcp-rr-64-cpu",
                    "haproxy",
                    ["berth": [10, 12, 11], "haproxy": [20, 20, 10], "docker-proxy": [30, 31, 32]]
                ),
                CPUCostTests.figure(
                    "udp-pps-cpu",
                    "nginx",
                    ["berth": [4, 4, 4], "nginx": [5, 4, 10]],
                    unit: "CPU ms/1000 datagrams"
                ),
            ]
        )
        let table = CPUCost.table(scenario, targets: ["direct", "berth", "docker-proxy", "haproxy", "nginx"])
        #expect(
            table == """
                | figure | unit | berth | docker-proxy | haproxy | nginx | berth ÷ peer | < 0.80× |
                | --- | --- | ---: | ---: | ---: | ---: | --- | --- |
                | tcp-rr-64-cpu | CPU ms/1000 req | 11.0 (10.0–12.0) | 31.0 (30.0–32.0) | 20.0 (10.0–20.0) | n/a | ×0.60 (×0.50–×1.10) to haproxy | in 2 of 3 repetitions |
                | udp-pps-cpu | CPU ms/1000 datagrams | 4.00 (4.00–4.00) | n/a | n/a | 5.00 (4.00–10.0) | ×0.80 (×0.40–×1.00) to nginx | in 1 of 3 repetitions |

                Keep-alive requests/s with 64 connections, berth ÷ haproxy per repetition: ×1.24 (×1.20–×1.32) (target ≥ 1.20×: yes).

                """
        )
        // A run without CPU figures (one from before them) has no table.
        #expect(
            CPUCost.table(BenchScenario(name: "loopback", figures: [scenario.figures[0]]), targets: ["berth"]) == ""
        )
    }
}
