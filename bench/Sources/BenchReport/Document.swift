// A run as RESULTS.json holds it: what `berth-bench --json` writes, and what `compare`,
// `--render` and the charts read back. Fields added after the first recorded runs are
// optional, so an older file still reads.

public struct BenchDocument: Codable, Sendable {
    public var environment: BenchEnvironment
    public var targets: [String]
    public var scenarios: [BenchScenario]

    public init(environment: BenchEnvironment, targets: [String], scenarios: [BenchScenario]) {
        self.environment = environment
        self.targets = targets
        self.scenarios = scenarios
    }
}

/// What the numbers were measured on, and how.
public struct BenchEnvironment: Codable, Sendable {
    public var date: String
    public var nproc: Int
    public var cpu: String
    public var kernel: String
    public var memory: String
    /// Target name → its version line (berth's with the commit, each peer's own -v).
    public var versions: [String: String]
    public var duration: Double
    public var repetitions: Int
    public var command: String
    /// `git rev-parse HEAD` of the checkout berth was built from, or "unknown".
    public var berthCommit: String?
    public var scenarios: [String]?
    /// /proc/loadavg's 1, 5 and 15 minute averages when the run started.
    public var loadAverage: String?
    /// Set when the run was interrupted: what it did not measure.
    public var notMeasured: [String]?

    public init(
        date: String,
        nproc: Int,
        cpu: String,
        kernel: String,
        memory: String,
        versions: [String: String],
        duration: Double,
        repetitions: Int,
        command: String,
        berthCommit: String? = nil,
        scenarios: [String]? = nil,
        loadAverage: String? = nil,
        notMeasured: [String]? = nil
    ) {
        self.date = date
        self.nproc = nproc
        self.cpu = cpu
        self.kernel = kernel
        self.memory = memory
        self.versions = versions
        self.duration = duration
        self.repetitions = repetitions
        self.command = command
        self.berthCommit = berthCommit
        self.scenarios = scenarios
        self.loadAverage = loadAverage
        self.notMeasured = notMeasured
    }
}

public struct BenchScenario: Codable, Sendable {
    public var name: String
    public var figures: [BenchFigure]

    public init(name: String, figures: [BenchFigure]) {
        self.name = name
        self.figures = figures
    }
}

public struct BenchFigure: Codable, Sendable {
    public var id: String
    /// The figure group (`--figures` name, one chart each); absent in runs before the charts.
    public var group: String?
    public var title: String
    public var unit: String
    public var higherIsBetter: Bool
    /// The target ratios are taken to: direct, or docker-proxy for memory.
    public var ratioTo: String
    public var targets: [String: BenchCell]

    public init(
        id: String,
        group: String?,
        title: String,
        unit: String,
        higherIsBetter: Bool,
        ratioTo: String,
        targets: [String: BenchCell]
    ) {
        self.id = id
        self.group = group
        self.title = title
        self.unit = unit
        self.higherIsBetter = higherIsBetter
        self.ratioTo = ratioTo
        self.targets = targets
    }
}

/// One target's figure: the repetitions' values and their summary, or why there is none.
public struct BenchCell: Codable, Sendable {
    public var median: Double?
    public var min: Double?
    public var max: Double?
    public var values: [Double]?
    public var ratio: Double?
    public var errors: Int?
    public var note: String?
    public var unsupported: Bool?

    public init(
        median: Double? = nil,
        min: Double? = nil,
        max: Double? = nil,
        values: [Double]? = nil,
        ratio: Double? = nil,
        errors: Int? = nil,
        note: String? = nil,
        unsupported: Bool? = nil
    ) {
        self.median = median
        self.min = min
        self.max = max
        self.values = values
        self.ratio = ratio
        self.errors = errors
        self.note = note
        self.unsupported = unsupported
    }

    /// A cell of these values (nil when there are none).
    public init?(values: [Double]) {
        guard let s = Statistics.summary(values) else { return nil }
        self.init(median: s.median, min: s.min, max: s.max, values: values)
    }
}
