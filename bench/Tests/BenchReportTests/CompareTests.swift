import BenchReport
import Foundation
import Testing

/// Two runs in RESULTS.json's format. `old` is an excerpt of the recorded run (bench/RESULTS.json,
/// 2026-11-29, berth at 735d1cc), written before the optional fields existed; `new` moves
/// berth's bulk throughput down by a fifth and its latency down by a sixth, and leaves the
/// rest inside the spread of the old repetitions.
enum Recorded {
    static let old = """
        {
          "environment" : {
            "command" : "--duration 2 --repeat 3", "cpu" : "AMD EPYC", "date" : "2026-11-29T18:20:25Z",
            "duration" : 2, "kernel" : "6.18.44-fc-v657", "memory" : "24 GiB", "nproc" : 2, "repetitions" : 3,
            "versions" : { "berth" : "berth 0.1.0 at 735d1cc", "direct" : "-" }
          },
          "targets" : [ "direct", "berth", "docker-proxy" ],
          "scenarios" : [ { "name" : "loopback", "figures" : [
            { "id" : "tcp-bulk-1", "title" : "TCP bulk, 1 stream", "unit" : "Gbit/s", "higherIsBetter" : true,
              "ratioTo" : "direct", "targets" : {
                "direct" : { "median" : 28.36694335243105, "values" : [ 30.98295571944329, 28.36694335243105, 23.74784200478547 ] },
                "berth" : { "median" : 15.437057092521913, "values" : [ 16.951119375910704, 15.303773590174389, 15.437057092521913 ] } } },
            { "id" : "tcp-rr-1-p50", "title" : "TCP request/response latency, 1 conn pinned to one CPU, p50",
              "unit" : "µs", "higherIsBetter" : false, "ratioTo" : "direct", "targets" : {
                "direct" : { "median" : 18.431, "values" : [ 17.919, 18.431, 18.943 ] },
                "berth" : { "median" : 43.519, "values" : [ 43.007, 43.519, 45.567 ] },
                "docker-proxy" : { "median" : 48.639, "values" : [ 48.639, 48.639, 48.639 ] } } },
            { "id" : "udp-loss", "title" : "UDP loss at that load", "unit" : "%", "higherIsBetter" : false,
              "ratioTo" : "direct", "targets" : {
                "direct" : { "median" : 0, "values" : [ 0, 0, 0 ] },
                "berth" : { "median" : 41.21799822531879, "values" : [ 41.21799822531879, 47.19877902574458, 24.80317390974016 ] } } }
          ] } ]
        }
        """

    static let new = """
        {
          "environment" : {
            "command" : "--duration 2 --repeat 3", "cpu" : "AMD EPYC", "date" : "2026-12-07T01:00:00Z",
            "duration" : 2, "kernel" : "6.18.44-fc-v657", "memory" : "24 GiB", "nproc" : 2, "repetitions" : 3,
            "versions" : { "berth" : "berth 0.1.0 at 9930a14", "direct" : "-" },
            "berthCommit" : "9930a14aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "scenarios" : [ "loopback" ], "loadAverage" : "0.91 0.50 0.22"
          },
          "targets" : [ "direct", "berth", "docker-proxy" ],
          "scenarios" : [ { "name" : "loopback", "figures" : [
            { "id" : "tcp-bulk-1", "group" : "tcp-bulk", "title" : "TCP bulk, 1 stream", "unit" : "Gbit/s",
              "higherIsBetter" : true, "ratioTo" : "direct", "targets" : {
                "direct" : { "values" : [ 29.1, 24.9, 30.2 ] },
                "berth" : { "values" : [ 12.1, 12.6, 12.3 ] } } },
            { "id" : "tcp-rr-1-p50", "group" : "tcp-rr", "title" : "TCP request/response latency, 1 conn pinned to one CPU, p50",
              "unit" : "µs", "higherIsBetter" : false, "ratioTo" : "direct", "targets" : {
                "direct" : { "values" : [ 18.2, 18.4, 18.9 ] },
                "berth" : { "values" : [ 36.1, 36.9, 37.4 ] },
                "docker-proxy" : { "values" : [ 48.127, 48.639, 49.151 ] } } },
            { "id" : "udp-loss", "group" : "udp-pps", "title" : "UDP loss at that load", "unit" : "%",
              "higherIsBetter" : false, "ratioTo" : "direct", "targets" : {
                "direct" : { "values" : [ 0, 0, 0 ] },
                "berth" : { "values" : [ 44.0, 30.1, 39.5 ] } } }
          ] } ]
        }
        """

    static func document(_ text: String) throws -> BenchDocument {
        try JSONDecoder().decode(BenchDocument.self, from: Data(text.utf8))
    }
}

struct CompareTests {
    func row(_ c: Comparison, _ figure: String, _ target: String) -> ComparisonRow? {
        c.rows.first { $0.figure.id == figure && $0.target == target }
    }

    @Test func aChangeInsideTheNoiseIsNotFlaggedAndAClearOneIs() throws {
        let c = Comparison(old: try Recorded.document(Recorded.old), new: try Recorded.document(Recorded.new))
        #expect(c.rows.count == 7)
        // Inside the spread of the old repetitions.
        #expect(row(c, "tcp-bulk-1", "direct")?.verdict == .withinNoise)
        #expect(row(c, "tcp-rr-1-p50", "direct")?.verdict == .withinNoise)
        #expect(row(c, "tcp-rr-1-p50", "docker-proxy")?.verdict == .withinNoise)
        #expect(row(c, "udp-loss", "berth")?.verdict == .withinNoise)
        // 0 % loss both times: no change, no division by zero.
        #expect(row(c, "udp-loss", "direct")?.change == 0)
        #expect(row(c, "udp-loss", "direct")?.verdict == .withinNoise)
        // Every repetition beyond every old one, by a fifth: throughput down is worse.
        let bulk = try #require(row(c, "tcp-bulk-1", "berth"))
        #expect(bulk.verdict == .worse)
        #expect(abs(bulk.p! - 0.1) < 1e-9)
        #expect(abs(bulk.change! - (12.3 / 15.437057092521913 - 1)) < 1e-9)
        // Latency down is better (the figure's higherIsBetter is false).
        #expect(row(c, "tcp-rr-1-p50", "berth")?.verdict == .better)
    }

    @Test func failOnRegressionSetsTheExitStatus() throws {
        let old = try Recorded.document(Recorded.old)
        let new = try Recorded.document(Recorded.new)
        var options = CompareOptions()
        #expect(Comparison(old: old, new: new, options: options).exitStatus == 0)
        options.failOnRegressionPercent = 10
        let failing = Comparison(old: old, new: new, options: options)
        #expect(failing.exitStatus == 1)
        #expect(failing.regressions.map(\.target) == ["berth"])
        #expect(failing.text().contains("FAIL: 1 regression of 10% or more beyond the noise."))
        // berth's bulk fell by 20.3 %: under a 25 % limit it is reported, not failed.
        options.failOnRegressionPercent = 25
        let passing = Comparison(old: old, new: new, options: options)
        #expect(passing.exitStatus == 0)
        #expect(passing.text().contains("No regression of 25% or more beyond the noise."))
        // Only the targets asked for.
        options.failOnRegressionPercent = 10
        options.targets = ["direct", "docker-proxy"]
        #expect(Comparison(old: old, new: new, options: options).exitStatus == 0)
    }

    @Test func theTableHasBothMediansTheRatioAndTheVerdict() throws {
        let c = Comparison(old: try Recorded.document(Recorded.old), new: try Recorded.document(Recorded.new))
        let text = c.text(oldName: "old.json", newName: "new.json")
        #expect(text.contains("- old: `old.json`: 2026-11-29T18:20:25Z, berth 735d1cc, 2 s × 3"))
        #expect(text.contains("berth 9930a14aaaaa"))
        #expect(text.contains("### TCP bulk, 1 stream (Gbit/s, higher is better)"))
        let line = try #require(text.split(separator: "\n").first { $0.hasPrefix("| berth") && $0.contains("12.3") })
        #expect(
            line.split(separator: "|").map { $0.trimmingCharacters(in: .whitespaces) } == [
                "berth", "15.4 (15.3–17.0)", "12.3 (12.1–12.6)", "×0.80", "0.10", "**worse** by 20.3%",
            ]
        )
        #expect(text.contains("7 rows: 1 better, 1 worse, 5 within the noise"))
    }

    @Test func oneRepetitionASideCannotBeTold() throws {
        var old = try Recorded.document(Recorded.old)
        var new = try Recorded.document(Recorded.new)
        for d in [0, 1] {
            var doc = d == 0 ? old : new
            for s in doc.scenarios.indices {
                for f in doc.scenarios[s].figures.indices {
                    for (t, cell) in doc.scenarios[s].figures[f].targets {
                        doc.scenarios[s].figures[f].targets[t] = BenchCell(values: [cell.values![0]])
                    }
                }
            }
            if d == 0 { old = doc } else { new = doc }
        }
        var options = CompareOptions()
        options.failOnRegressionPercent = 1
        let c = Comparison(old: old, new: new, options: options)
        #expect(c.rows.allSatisfy { $0.verdict == .cannotTell })
        #expect(c.exitStatus == 0)
        #expect(c.text().contains("(7 rows had too few repetitions to fail on.)"))
    }

    /// The same code on a machine 20 % slower as a whole: the values call berth worse, the
    /// ratios to direct in each repetition do not move.
    @Test func relativeComparesRatiosToDirectPerRepetition() throws {
        let old = try Recorded.document(Recorded.old)
        var slower = old
        for f in slower.scenarios[0].figures.indices {
            for (t, cell) in slower.scenarios[0].figures[f].targets {
                slower.scenarios[0].figures[f].targets[t] = BenchCell(values: cell.values!.map { $0 * 0.8 })
            }
        }
        #expect(row(Comparison(old: old, new: slower), "tcp-bulk-1", "berth")?.verdict == .worse)
        var options = CompareOptions()
        options.relative = true
        let relative = Comparison(old: old, new: slower, options: options)
        let bulk = try #require(row(relative, "tcp-bulk-1", "berth"))
        #expect(bulk.verdict == .withinNoise)
        #expect(abs(bulk.change!) < 1e-9)
        #expect(row(relative, "tcp-bulk-1", "direct") == nil)
        // udp-loss's base is 0 %: no ratio, no row.
        #expect(row(relative, "udp-loss", "berth") == nil)
        // And a real change still shows: berth's ratios in `new` are all below the old ones.
        let real = Comparison(old: old, new: try Recorded.document(Recorded.new), options: options)
        #expect(row(real, "tcp-bulk-1", "berth")?.verdict == .worse)
        #expect(real.text().contains("### TCP bulk, 1 stream (÷ direct per repetition, higher is better)"))
    }

    @Test func aSeparatedButSmallChangeIsNotCalledAChange() throws {
        let old = try Recorded.document(Recorded.old)
        var new = old
        new.scenarios[0].figures[1].targets["direct"] = BenchCell(values: [19.0, 19.1, 19.3])
        let c = Comparison(old: old, new: new)
        let r = try #require(row(c, "tcp-rr-1-p50", "direct"))
        #expect(r.p! <= 0.1)
        #expect(r.verdict == .smallChange)
    }

    @Test func figuresOnlyOneRunHasAreNamed() throws {
        let old = try Recorded.document(Recorded.old)
        var new = old
        new.scenarios[0].figures.removeLast()
        new.scenarios[0].figures[0].targets["berth"] = nil
        let c = Comparison(old: old, new: new)
        #expect(c.onlyOld == ["loopback udp-loss"])
        #expect(row(c, "tcp-bulk-1", "berth")?.verdict == .onlyOld)
    }
}

struct StatisticsTests {
    @Test func mannWhitneyExactValues() {
        // Complete separation: 2 of the C(6, 3) = 20 splits are as extreme.
        #expect(abs(Statistics.mannWhitneyP([1, 2, 3], [4, 5, 6]) - 0.1) < 1e-12)
        #expect(abs(Statistics.mannWhitneyP([6, 5, 4], [1, 2, 3]) - 0.1) < 1e-12)
        #expect(abs(Statistics.mannWhitneyP([1, 2, 3, 4, 5], [6, 7, 8, 9, 10]) - 2.0 / 252) < 1e-12)
        // One value out of place: 4 of 20 splits are as extreme.
        #expect(abs(Statistics.mannWhitneyP([1, 2, 4], [3, 5, 6]) - 0.2) < 1e-12)
        #expect(Statistics.mannWhitneyP([1, 3, 5], [2, 4, 6]) > 0.5)
        // All tied: nothing to tell.
        #expect(Statistics.mannWhitneyP([7, 7, 7], [7, 7, 7]) == 1)
        #expect(Statistics.mannWhitneyP([], [1]) == 1)
        #expect(abs(Statistics.smallestP(3, 3) - 0.1) < 1e-12)
        #expect(Statistics.smallestP(1, 1) == 1)
    }

    @Test func manyRepetitionsUseTheNormalApproximation() {
        let a = (0..<60).map(Double.init)
        let b = (0..<60).map { Double($0) + 0.5 }
        let p = Statistics.mannWhitneyP(a, b)
        #expect(p > 0.8 && p <= 1)
        #expect(Statistics.mannWhitneyP(a, a.map { $0 + 100 }) < 1e-6)
    }

    @Test func summaryAndNumbers() {
        #expect(Statistics.summary([3, 1, 2])?.median == 2)
        #expect(Statistics.summary([4, 1, 2, 3])?.median == 2.5)
        #expect(Statistics.summary([]) == nil)
        #expect(formatNumber(1234.4) == "1234")
        #expect(formatNumber(12.34) == "12.3")
        #expect(formatNumber(1.234) == "1.23")
        #expect(formatNumber(0) == "0.00")
        #expect(formatNumber(1e300) != "")
    }
}
