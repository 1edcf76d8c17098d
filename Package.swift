// swift-tools-version:6.1
import PackageDescription

// Release builds of the data path (the event loop and the relay) leave out Swift's run-time
// exclusivity checks: they were two thirds of berth's instructions per round trip (bench/RESULTS.md,
// "Exclusivity checks"). Debug builds, the tests and the ASan, TSan and fuzz builds keep them
// (README, "Exclusivity checks" says why that is safe).
let dataPathSettings: [SwiftSetting] = [
    .unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release))
]

let package = Package(
    name: "berth",
    // The libraries are what bench/ builds on (a package of its own, it sees only `public`);
    // Publishing, Netfilter, CNI, LogSinks and Control but its client are `package` access.
    products: [
        .executable(name: "berth", targets: ["BerthCLI"]),
        .executable(name: "berth-cni", targets: ["BerthCNI"]),
        .library(name: "Relay", targets: ["Relay"]),
        .library(name: "LinuxIO", targets: ["LinuxIO"]),
        .library(name: "Mappings", targets: ["Mappings"]),
        .library(name: "Control", targets: ["Control"]),
        .library(name: "JSON", targets: ["JSON"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-system.git", from: "1.4.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.0"),
    ],
    targets: [
        .target(
            name: "CBerthLinux",
            cSettings: [.define("_GNU_SOURCE")]
        ),
        .target(
            name: "LinuxIO",
            dependencies: [
                "CBerthLinux",
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            swiftSettings: dataPathSettings
        ),
        .target(name: "Mappings", dependencies: ["CGitCommit", "GitCommit"]),
        // The git commit berth is built from, for its version (Mappings' Version.swift): declared in
        // C, defined by a file the plugin writes at build time (see CGitCommit.h for why).
        .target(name: "CGitCommit"),
        .target(name: "GitCommit", plugins: ["VersionStamp"]),
        .plugin(name: "VersionStamp", capability: .buildTool(), path: "Sources/VersionStamp"),
        .target(
            name: "Relay",
            dependencies: [
                "LinuxIO", "Mappings",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: dataPathSettings
        ),
        .target(
            name: "Publishing",
            dependencies: [
                "Relay", "Netfilter", "Mappings", "LinuxIO",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "SystemPackage", package: "swift-system"),
            ]
        ),
        // Log lines to a file (reopened on SIGHUP) or to syslog, for the docker-proxy mode whose stderr is /dev/null.
        .target(
            name: "LogSinks",
            dependencies: ["LinuxIO", .product(name: "Logging", package: "swift-log")]
        ),
        .executableTarget(
            name: "BerthCLI",
            dependencies: [
                "Publishing", "Mappings", "Control", "JSON", "LogSinks",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // The daemon's control API: HTTP/1.1 and JSON over a unix socket, on its own thread.
        .target(
            name: "Control",
            dependencies: [
                "Publishing", "Mappings", "LinuxIO", "JSON", "CControlParsers",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // The CNI plugin: runtimeConfig.portMappings through a berth daemon, or a shared nftables table.
        // JSON bodies, as the control API, its client and berth-cni read and write them (cJSON, strictly).
        .target(name: "JSON", dependencies: ["CControlParsers", "Mappings"]),
        .target(name: "CNI", dependencies: ["Control", "JSON", "Netfilter", "Mappings", "LinuxIO"]),
        .executableTarget(
            name: "BerthCNI",
            dependencies: ["CNI", "Control", "LinuxIO", "Mappings"]
        ),
        .systemLibrary(name: "CControlParsers", providers: [.apt(["libhttp-parser-dev", "libcjson-dev"])]),
        // Shims only the tests need (setns, posix_spawn's closefrom), kept out of the product's CBerthLinux.
        .target(name: "CTestSupport", path: "Tests/CTestSupport", cSettings: [.define("_GNU_SOURCE")]),
        .target(name: "TestSupport", dependencies: ["LinuxIO", "CBerthLinux", "CTestSupport"], path: "Tests/TestSupport"),
        .systemLibrary(
            name: "CNetfilter",
            pkgConfig: "libnftnl",
            providers: [.apt(["libnftnl-dev", "libmnl-dev"])]
        ),
        .target(name: "Netfilter", dependencies: ["CNetfilter", "Mappings", "LinuxIO"]),
        // Drives Netfilter inside throwaway network namespaces for NetfilterTests (it reads the
        // ruleset back with nft); test-only, not a product.
        .executableTarget(
            name: "NetfilterProbe",
            dependencies: ["Netfilter", "Mappings", "LinuxIO", "TestSupport"],
            path: "Tests/NetfilterProbe"
        ),
        .testTarget(name: "NetfilterTests", dependencies: ["Netfilter", "Mappings", "NetfilterProbe"]),
        .testTarget(name: "MappingsTests", dependencies: ["Mappings"]),
        .testTarget(name: "LinuxIOTests", dependencies: ["LinuxIO", "TestSupport"]),
        .testTarget(name: "RelayTests", dependencies: ["Relay", "LinuxIO", "Mappings", "TestSupport"]),
        .testTarget(name: "ControlTests", dependencies: ["Control", "JSON", "Publishing", "Mappings", "LinuxIO", "TestSupport"]),
        .testTarget(name: "PublishingTests", dependencies: ["Publishing", "Mappings", "LinuxIO", "TestSupport"]),
        .testTarget(name: "CNITests", dependencies: ["CNI", "Control", "JSON", "Mappings", "Netfilter", "LinuxIO", "TestSupport"]),
        .testTarget(name: "LogSinksTests", dependencies: ["LogSinks", "LinuxIO", "TestSupport"]),
        .testTarget(name: "EndToEndTests", dependencies: ["LinuxIO", "TestSupport", "Control", "Mappings"]),
    ],
    swiftLanguageModes: [.v6]
)

// libFuzzer targets, for `make fuzz` only: they call libFuzzer's driver, which exists only in a build with
// `-sanitize=fuzzer`, so a plain `swift build` or `swift test` must not see them. `make fuzz` sets
// BERTH_FUZZ=1 and builds them in a scratch path of their own (.build-fuzz).
if Context.environment["BERTH_FUZZ"] == "1" {
    package.targets += [
        .target(name: "FuzzSupport", dependencies: ["Mappings"], path: "Fuzz/FuzzSupport"),
        .executableTarget(name: "PortSpecFuzzer", dependencies: ["FuzzSupport"], path: "Fuzz/PortSpecFuzzer"),
        .executableTarget(
            name: "RunArgumentsFuzzer",
            dependencies: ["FuzzSupport", "Mappings"],
            path: "Fuzz/RunArgumentsFuzzer"
        ),
        .executableTarget(
            name: "ProxyFlagsFuzzer",
            dependencies: ["FuzzSupport", "Mappings"],
            path: "Fuzz/ProxyFlagsFuzzer"
        ),
        .executableTarget(
            name: "ControlRequestFuzzer",
            dependencies: ["FuzzSupport", "Control", "JSON", "Publishing"],
            path: "Fuzz/ControlRequestFuzzer"
        ),
        .executableTarget(
            name: "CNIConfigFuzzer",
            dependencies: ["FuzzSupport", "CNI", "Control", "JSON", "Mappings"],
            path: "Fuzz/CNIConfigFuzzer"
        ),
    ]
}
