// Interactive loops ask the kernel for a short time slice (Publisher.interactiveSlice), so that a
// woken loop preempts a busy thread at once; bulk loops keep the default.

import TestSupport
import XCTest

@testable import Publishing

final class LoopSliceTests: XCTestCase {

    /// Read from /proc/self/task/*/sched (the kernel's `se.slice`, in nanoseconds), by thread name.
    private func slices() -> [String: UInt64] {
        var out: [String: UInt64] = [:]
        for (directory, name) in threadsOfThisProcess() {
            guard let sched = readFile(directory + "sched"),
                let line = sched.split(separator: "\n").first(where: { $0.hasPrefix("se.slice") }),
                let value = line.split(separator: ":").last.flatMap({ UInt64(String($0.filter(\.isNumber))) })
            else { continue }
            out[name] = value
        }
        return out
    }

    func testInteractiveLoopsRunWithAShortSliceAndBulkLoopsWithTheDefault() throws {
        guard let own = readFile("/proc/self/sched"), own.contains("se.slice") else {
            throw XCTSkip("this kernel's /proc/self/sched shows no se.slice")
        }
        let echo = try TestServer.echo()
        var options = PublishOptions()
        options.threads = 2
        options.bulkLoops = 1
        let publisher = Publisher(options: options)
        _ = try publisher.add(try loopbackMappings(["127.0.0.1::\(echo.address.port)"]))
        let stop = try runInBackground(publisher)
        defer { stop() }
        try waitUntilAsleepInEpoll(["berth-loop-1", "berth-bulk-0"])
        let found = slices()
        XCTAssertEqual(found["berth-loop-1"], Publisher.interactiveSlice)
        let bulk = try XCTUnwrap(found["berth-bulk-0"])
        XCTAssertGreaterThan(bulk, Publisher.interactiveSlice, "a bulk loop keeps the kernel's default slice")
    }
}
