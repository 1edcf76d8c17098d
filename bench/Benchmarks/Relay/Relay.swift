// Micro-benchmarks of berth's forwarding core (not of the CLI): the splice relay's
// throughput, connection set-up and tear-down, and `-p` parsing.
//
// Besides time, each reports what does not depend on the machine's mood: heap
// allocations (the goal is none per chunk in steady state), splice calls per MiB and
// epoll waits per MiB or per connection, from berth's own counters. Thresholds gate only
// the allocation counts, never time.
//
//   swift package --package-path bench benchmark
//   swift package --package-path bench benchmark --filter "TCP relay.*"

import Benchmark
import LinuxIO
import Mappings
import Relay

nonisolated(unsafe) var bulk: BulkRig?
nonisolated(unsafe) var connections: ConnectRig?

private let mebibyte = 1 << 20

/// Metrics of the relay benchmarks: time for the record, counts for the gate. No `.cpuTotal`:
/// reading it costs 16 allocations of the harness's own inside every measured iteration.
private func relayMetrics(_ custom: [BenchmarkMetric]) -> [BenchmarkMetric] {
    [.wallClock, .throughput, .mallocCountTotal] + custom
}

private let spliceCallsPerMiB = BenchmarkMetric.custom(
    "splice calls / MiB",
    polarity: .prefersSmaller,
    useScalingFactor: false
)
private let epollWaitsPerMiB = BenchmarkMetric.custom(
    "epoll waits / MiB",
    polarity: .prefersSmaller,
    useScalingFactor: false
)
private let mebibytesPerSecond = BenchmarkMetric.custom("MiB/s", polarity: .prefersLarger, useScalingFactor: false)
private let spliceCallsPerConnection = BenchmarkMetric.custom(
    "splice calls / connection",
    polarity: .prefersSmaller,
    useScalingFactor: false
)
private let epollWaitsPerConnection = BenchmarkMetric.custom(
    "epoll waits / connection",
    polarity: .prefersSmaller,
    useScalingFactor: false
)

/// Only allocation counts gate: they are the same on any machine for the same code.
private func mallocGate(_ p90: Int) -> [BenchmarkMetric: BenchmarkThresholds] {
    [.mallocCountTotal: .init(absolute: [.p50: p90, .p90: p90])]
}

private func transferBenchmark(_ name: String, bytes: Int, iterations: Int) {
    Benchmark(
        name,
        configuration: .init(
            metrics: relayMetrics([mebibytesPerSecond, spliceCallsPerMiB, epollWaitsPerMiB]),
            warmupIterations: 2,
            maxDuration: .seconds(3),
            maxIterations: iterations,
            thresholds: mallocGate(0)
        )
    ) { benchmark in
        guard let rig = bulk else { fatalError("no rig") }
        let splices = rig.relay.context.counters.spliceCalls
        let waits = rig.relay.loop.waits
        let start = Instant.now()
        benchmark.startMeasurement()
        do { try rig.transfer(bytes) } catch { fatalError("\(error)") }
        benchmark.stopMeasurement()
        let elapsed = Instant.now().nanoseconds - start.nanoseconds
        let mib = Double(bytes) / Double(mebibyte)
        benchmark.measurement(mebibytesPerSecond, Int(mib / (Double(elapsed) / 1e9)))
        benchmark.measurement(
            spliceCallsPerMiB,
            Int((Double(rig.relay.context.counters.spliceCalls - splices) / mib).rounded())
        )
        benchmark.measurement(epollWaitsPerMiB, Int((Double(rig.relay.loop.waits - waits) / mib).rounded()))
    } setup: {
        let rig = try BulkRig()
        // The first transfer accepts, connects and takes the pipe: not steady state.
        try rig.transfer(4 * mebibyte)
        bulk = rig
    } teardown: {
        bulk?.stop()
        bulk = nil
    }
}

let benchmarks: @Sendable () -> Void = {
    transferBenchmark("TCP relay 1 MiB", bytes: mebibyte, iterations: 2000)
    transferBenchmark("TCP relay 64 MiB", bytes: 64 * mebibyte, iterations: 100)

    Benchmark(
        "TCP connection set-up and tear-down",
        configuration: .init(
            metrics: relayMetrics([spliceCallsPerConnection, epollWaitsPerConnection]),
            warmupIterations: 20,
            maxDuration: .seconds(3),
            maxIterations: 20_000
        )
    ) { benchmark in
        guard let rig = connections else { fatalError("no rig") }
        let splices = rig.relay.context.counters.spliceCalls
        let waits = rig.relay.loop.waits
        benchmark.startMeasurement()
        do { try rig.once() } catch { fatalError("\(error)") }
        benchmark.stopMeasurement()
        benchmark.measurement(spliceCallsPerConnection, Int(rig.relay.context.counters.spliceCalls - splices))
        benchmark.measurement(epollWaitsPerConnection, Int(rig.relay.loop.waits - waits))
    } setup: {
        connections = try ConnectRig()
    } teardown: {
        connections?.stop()
        connections = nil
    }

    let specs = ["80", "8080:80", "127.0.0.1:8080:80", "127.0.0.1::80/udp", "[::1]:8080:80", "8000-8010:80-90"]
    Benchmark(
        "-p parsing (6 specs)",
        configuration: .init(
            metrics: [.wallClock, .throughput, .mallocCountTotal],
            scalingFactor: .kilo,
            maxDuration: .seconds(2),
            maxIterations: 1_000
        )
    ) { benchmark in
        for _ in benchmark.scaledIterations {
            for spec in specs {
                blackHole(try? PortSpec(parsing: spec))
            }
        }
    }
}
