// Micro-benchmarks of berth's forwarding core (not of the CLI): the splice relay's
// throughput, connection set-up and tear-down, UDP datagrams through the UDP relay, the UDP
// flow table at 100,000 flows, and `-p` parsing.
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
nonisolated(unsafe) var datagrams: DatagramRig?
nonisolated(unsafe) var fullTable: UDPFlowTable?

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

/// The flow-table benchmarks: wall clock and allocations, which must stay at 0.
private func flowTableConfiguration(maxIterations: Int) -> Benchmark.Configuration {
    .init(
        metrics: [.wallClock, .throughput, .mallocCountTotal],
        maxDuration: .seconds(3),
        maxIterations: maxIterations,
        thresholds: mallocGate(0)
    )
}

/// A table holding every key, all last active at `now`.
private func filledTable(_ keys: [FlowKey], at now: Instant) -> UDPFlowTable {
    let table = UDPFlowTable(capacity: keys.count)
    for key in keys { _ = table.insert(key, now: now) }
    return table
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

    let burst = 1000
    let datagramsPerSecond = BenchmarkMetric.custom("datagrams/s", polarity: .prefersLarger, useScalingFactor: false)
    let waitsPerThousand = BenchmarkMetric.custom(
        "epoll waits / 1000 datagrams",
        polarity: .prefersSmaller,
        useScalingFactor: false
    )
    Benchmark(
        "UDP relay 1000 datagrams of 64 B",
        configuration: .init(
            metrics: relayMetrics([datagramsPerSecond, waitsPerThousand]),
            warmupIterations: 5,
            maxDuration: .seconds(3),
            maxIterations: 5_000,
            thresholds: mallocGate(0)
        )
    ) { benchmark in
        guard let rig = datagrams else { fatalError("no rig") }
        let sent = rig.context.counters.datagramsToBackend
        let waits = rig.loop.waits
        let start = Instant.now()
        benchmark.startMeasurement()
        do { try rig.burst(burst) } catch { fatalError("\(error)") }
        benchmark.stopMeasurement()
        let moved = rig.context.counters.datagramsToBackend - sent
        let elapsed = Double(Instant.now().nanoseconds - start.nanoseconds) / 1e9
        benchmark.measurement(datagramsPerSecond, Int(Double(moved) / elapsed))
        benchmark.measurement(
            waitsPerThousand,
            Int((Double(rig.loop.waits - waits) * 1000 / Double(max(moved, 1))).rounded())
        )
    } setup: {
        let rig = try DatagramRig()
        try rig.burst(burst)  // the flow's socket is made here, not in steady state
        datagrams = rig
    } teardown: {
        datagrams?.stop()
        datagrams = nil
    }

    // The UDP flow table at 100,000 flows: insert into an empty table, look every flow up in a
    // full one, expire them all (oldest first, as the relay's timer does).
    let flowCount = 100_000
    let keys = flowKeys(flowCount)
    Benchmark("UDP flow table insert 100,000", configuration: flowTableConfiguration(maxIterations: 50)) { benchmark in
        let table = UDPFlowTable(capacity: flowCount)
        let now = Instant.now()
        benchmark.startMeasurement()
        for key in keys { blackHole(table.insert(key, now: now)) }
        benchmark.stopMeasurement()
        blackHole(table)
    }
    Benchmark("UDP flow table lookup 100,000", configuration: flowTableConfiguration(maxIterations: 100)) { benchmark in
        guard let table = fullTable else { fatalError("no table") }
        for key in keys { blackHole(table.lookup(key)) }
    } setup: {
        fullTable = filledTable(keys, at: Instant.now())
    } teardown: {
        fullTable = nil
    }
    Benchmark("UDP flow table expire 100,000", configuration: flowTableConfiguration(maxIterations: 50)) { benchmark in
        let then = Instant.now()
        let table = filledTable(keys, at: then)
        let later = then + .seconds(3600)
        benchmark.startMeasurement()
        while let slot = table.expired(now: later) { table.remove(slot) }
        benchmark.stopMeasurement()
        blackHole(table)
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
