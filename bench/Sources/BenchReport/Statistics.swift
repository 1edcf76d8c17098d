// The median of the repetitions and the test `compare` uses to tell a change from the noise:
// Mann–Whitney U, two-sided, exact (every split of the pooled ranks counted, ties given their
// mid-rank), so a run of 3 repetitions gets the p it really has rather than a normal
// approximation's (up to 80 values in all; beyond, the normal approximation with ties).

import Glibc

public enum Statistics {
    public struct Summary: Equatable, Sendable {
        public var median: Double
        public var min: Double
        public var max: Double
        public var count: Int
    }

    public static func summary(_ values: [Double]) -> Summary? {
        guard !values.isEmpty else { return nil }
        let sorted = values.sorted()
        let n = sorted.count
        let median = n % 2 == 1 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2
        return Summary(median: median, min: sorted[0], max: sorted[n - 1], count: n)
    }

    /// Two-sided p of the exact Mann–Whitney U test: the share of all ways to split the pooled
    /// values into groups of a's and b's sizes whose rank sum for a is at least as far from its
    /// mean as a's is. 1 when either side is empty.
    public static func mannWhitneyP(_ a: [Double], _ b: [Double]) -> Double {
        let n1 = a.count
        let n = a.count + b.count
        guard n1 > 0, b.count > 0 else { return 1 }
        // Doubled mid-ranks are integers: 2 × (average of the 1-based positions of a tie).
        let pooled = (a + b).enumerated().sorted { $0.element < $1.element }
        var rank2 = [Int](repeating: 0, count: n)
        var i = 0
        while i < n {
            var j = i
            while j + 1 < n && pooled[j + 1].element == pooled[i].element { j += 1 }
            for k in i...j { rank2[pooled[k].offset] = i + j + 2 }
            i = j + 1
        }
        let observed = rank2[0..<n1].reduce(0, +)
        let total = rank2.reduce(0, +)
        if n > exactLimit { return normalP(rank2, n1: n1, observed: observed) }
        // Mean of a's doubled rank sum is total × n1 / n; compare n × sum against total × n1
        // to stay in integers.
        let far = abs(n * observed - total * n1)
        // ways[k][s]: how many k-element subsets of the ranks seen so far sum to s.
        var ways = [[Double]](repeating: [Double](repeating: 0, count: total + 1), count: n1 + 1)
        ways[0][0] = 1
        for r in rank2 {
            for k in stride(from: min(n1, n), through: 1, by: -1) {
                for s in stride(from: total, through: r, by: -1) where ways[k - 1][s - r] != 0 {
                    ways[k][s] += ways[k - 1][s - r]
                }
            }
        }
        var extreme = 0.0
        var all = 0.0
        for s in 0...total where ways[n1][s] != 0 {
            all += ways[n1][s]
            if abs(n * s - total * n1) >= far { extreme += ways[n1][s] }
        }
        return Swift.min(1, extreme / all)
    }

    /// Pooled sizes up to this are counted exactly (the count costs about n² × n1 steps).
    static let exactLimit = 80

    /// The normal approximation with the tie correction, for runs of many repetitions.
    private static func normalP(_ rank2: [Int], n1: Int, observed: Int) -> Double {
        let n = Double(rank2.count)
        let m1 = Double(n1)
        let m2 = n - m1
        var ties: [Int: Double] = [:]
        for r in rank2 { ties[r, default: 0] += 1 }
        let correction = ties.values.reduce(0) { $0 + ($1 * $1 * $1 - $1) } / (n * (n - 1))
        let variance = m1 * m2 / 12 * ((n + 1) - correction)
        guard variance > 0 else { return 1 }
        let u = Double(observed) / 2 - m1 * (m1 + 1) / 2
        let z = abs(u - m1 * m2 / 2) / variance.squareRoot()
        return Swift.min(1, erfc(z / 2.squareRoot()))
    }

    /// The smallest p the test can give with these group sizes: 2 / C(n1 + n2, n1), when every
    /// value of one group is beyond every value of the other.
    public static func smallestP(_ n1: Int, _ n2: Int) -> Double {
        guard n1 > 0, n2 > 0 else { return 1 }
        var c = 1.0
        for i in 0..<Swift.min(n1, n2) { c = c * Double(n1 + n2 - i) / Double(i + 1) }
        return Swift.min(1, 2 / c)
    }
}
