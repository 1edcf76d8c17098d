// swift-tools-version:6.1
// berth's benchmarks, a package of their own so that the product's build stays lean:
// `swift package --package-path bench benchmark` runs the micro-benchmarks of the
// forwarding core (ordo-one/benchmark; the plugin finds targets under Benchmarks/),
// `swift run -c release --package-path bench berth-bench` the end-to-end runner.
import PackageDescription

let package = Package(
    name: "berth-bench",
    dependencies: [
        .package(name: "berth", path: ".."),
        .package(url: "https://github.com/ordo-one/benchmark.git", from: "1.38.1", traits: ["MallocInterposer"]),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift.git", from: "0.2.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.5.0"),
    ],
    targets: [
        .target(name: "CBench", cSettings: [.define("_GNU_SOURCE")]),
        // What a run's report is made of, apart from measuring: RESULTS.json's model, `compare`
        // and its test, the SVG charts, the progress line. No dependency, so its tests build fast.
        .target(name: "BenchReport"),
        .testTarget(name: "BenchReportTests", dependencies: ["BenchReport"]),
        // The yardstick for berth's TCP path: the least a splice relay can be (the runner's
        // `splice-reference` target).
        .executableTarget(
            name: "splice-reference",
            path: "Sources/SpliceReference",
            cSettings: [.define("_GNU_SOURCE"), .unsafeFlags(["-O2"])],
            linkerSettings: [.linkedLibrary("pthread")]
        ),
        .executableTarget(
            name: "berth-bench",
            dependencies: [
                "CBench",
                "BenchReport",
                .product(name: "LinuxIO", package: "berth"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Sources/BerthBench",
            swiftSettings: [.unsafeFlags(["-Ounchecked"])]
        ),
        // The daemon's control API: add and remove times, RSS holding many ports.
        .executableTarget(
            name: "berth-daemon-bench",
            dependencies: [
                .product(name: "Control", package: "berth"),
                .product(name: "JSON", package: "berth"),
                .product(name: "LinuxIO", package: "berth"),
            ],
            path: "Sources/DaemonBench"
        ),
        .executableTarget(
            name: "RelayBenchmarks",
            dependencies: [
                "CBench",
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "Relay", package: "berth"),
                .product(name: "LinuxIO", package: "berth"),
                .product(name: "Mappings", package: "berth"),
            ],
            path: "Benchmarks/Relay",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
    ],
    swiftLanguageModes: [.v6]
)
