// `berth-bench compare OLD.json NEW.json`: the CLI of BenchReport's Comparison. Exit status 0,
// 1 when --fail-on-regression found a regression that large beyond the noise, 2 when a file
// cannot be read as a run.

import ArgumentParser
import BenchReport
import Foundation

struct Compare: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Compare two runs' --json files, figure by figure, and tell changes from the noise.",
        discussion: """
            For every figure and target of both runs: both medians (min–max), new ÷ old, the p of an
            exact two-sided Mann–Whitney U test on the two runs' repetitions, and a verdict: better
            or worse when p ≤ --alpha and the median moved by at least --min-change percent.
            With 3 repetitions a side the smallest p is 0.1, reached only when every repetition of
            one run is beyond every repetition of the other; with 1 nothing can be told.
            --relative compares each repetition's ratio to direct (in the same repetition) instead:
            what a machine slower or faster as a whole in one run does to every target cancels out.
            Exit status: 0; 1 when --fail-on-regression PERCENT is given and a row is worse by at
            least that much beyond the noise; 2 when a file is not a berth-bench run.
            """
    )

    @Argument(help: "The earlier run (berth-bench --json).")
    var old: String

    @Argument(help: "The later run.")
    var new: String

    @Option(help: "Comma-separated targets to compare (default: every target of either run).")
    var targets: String?

    @Option(help: "Two-sided significance level of the test.")
    var alpha = 0.1

    @Option(help: ArgumentHelp("Smallest change of the median called better or worse.", valueName: "percent"))
    var minChange = 5.0

    @Option(
        help: ArgumentHelp("Exit 1 if a row is worse by at least this much, beyond the noise.", valueName: "percent")
    )
    var failOnRegression: Double?

    @Flag(help: "Compare each repetition's ratio to direct (memory: to docker-proxy), not the values.")
    var relative = false

    func validate() throws {
        guard alpha > 0 && alpha < 1 else { throw ValidationError("--alpha must be between 0 and 1") }
        guard minChange >= 0 && minChange.isFinite else { throw ValidationError("--min-change must be 0 or more") }
        if let failOnRegression, !(failOnRegression >= 0 && failOnRegression.isFinite) {
            throw ValidationError("--fail-on-regression must be 0 or more")
        }
    }

    func run() throws {
        var options = CompareOptions()
        options.alpha = alpha
        options.minChangePercent = minChange
        options.failOnRegressionPercent = failOnRegression
        options.relative = relative
        options.targets = targets?.split(separator: ",").map { String($0).trimmingWhitespace() }
        let comparison = Comparison(old: try Compare.read(old), new: try Compare.read(new), options: options)
        print(comparison.text(oldName: old, newName: new), terminator: "")
        if comparison.rows.isEmpty {
            FileHandle.standardError.write(
                "berth-bench compare: the runs have no figure and target in common\n".data(using: .utf8)!
            )
        }
        if comparison.exitStatus != 0 { throw ExitCode(comparison.exitStatus) }
    }

    static func read(_ path: String) throws -> BenchDocument {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            FileHandle.standardError.write("berth-bench compare: cannot read \(path)\n".data(using: .utf8)!)
            throw ExitCode(2)
        }
        do {
            return try JSONDecoder().decode(BenchDocument.self, from: data)
        } catch {
            FileHandle.standardError.write(
                "berth-bench compare: \(path) is not a berth-bench --json file (\(error))\n".data(using: .utf8)!
            )
            throw ExitCode(2)
        }
    }
}
