import Mappings
import Publishing
import XCTest

private func mappings(_ specs: String...) throws -> [PortMapping] {
    try specs.flatMap { try PortSpec(parsing: $0).mappings(to: .v4(172, 17, 0, 2)) }
}

private func options(threads: Int, mode: Mode = .userspace) -> PublishOptions {
    var options = PublishOptions()
    options.threads = threads
    options.mode = mode
    return options
}

final class DescriptorBudgetTests: XCTestCase {
    func testOneHostAddressIsOneListenerPerLoop() throws {
        let budget = DescriptorBudget(try mappings("127.0.0.1:8080:80", "[::1]::53/udp"), options: options(threads: 4))
        XCTAssertEqual(budget.listeners, 2 * 4)
        XCTAssertEqual(budget.descriptors, 8 + DescriptorBudget.reserve + 4 * DescriptorBudget.reservePerLoop)
    }

    func testAllAddressesAreTwoListenersExceptInKernelMode() throws {
        let all = try mappings("8080:80", "80-89")
        XCTAssertEqual(DescriptorBudget(all, options: options(threads: 1)).listeners, 11 * 2)
        XCTAssertEqual(DescriptorBudget(all, options: options(threads: 1, mode: .hybrid)).listeners, 11 * 2)
        XCTAssertEqual(DescriptorBudget(all, options: options(threads: 1, mode: .kernel)).listeners, 11)
    }

    /// A host range for one container port binds one port of it: one listener per address, not the range.
    func testHostRangeForOnePortIsOneListener() throws {
        XCTAssertEqual(
            DescriptorBudget(try mappings("127.0.0.1:8000-8999:80"), options: options(threads: 1)).listeners,
            1
        )
    }

    func testNoThreadsCountAsOneLoop() throws {
        let budget = DescriptorBudget(try mappings("127.0.0.1:80:80"), options: options(threads: 0))
        XCTAssertEqual(budget.listeners, 1)
        XCTAssertEqual(budget.descriptors, 1 + DescriptorBudget.reserve + DescriptorBudget.reservePerLoop)
    }

    func testIssueExampleIsRefusedInOneLine() throws {
        let budget = DescriptorBudget(try mappings("9278-47650"), options: options(threads: 1))
        XCTAssertEqual(budget.listeners, 76746)
        XCTAssertEqual(budget.descriptors, 76765)
        XCTAssertEqual(
            budget.refusal(limit: 20000)?.description,
            "76746 listening sockets need 76765 file descriptors, the limit is 20000 (ulimit -n)"
        )
        XCTAssertNil(budget.refusal(limit: 76765))
        XCTAssertNotNil(budget.refusal(limit: 76764))
        XCTAssertNil(budget.refusal(limit: UInt64.max))
    }

    func testOneListenerIsSingular() throws {
        let budget = DescriptorBudget(try mappings("127.0.0.1:80:80"), options: options(threads: 1))
        XCTAssertEqual(
            budget.refusal(limit: 3)?.description,
            "1 listening socket needs 20 file descriptors, the limit is 3 (ulimit -n)"
        )
    }

    func testNothingToBindNeedsOnlyTheReserve() {
        let budget = DescriptorBudget([], options: options(threads: 2))
        XCTAssertEqual(budget.listeners, 0)
        XCTAssertEqual(budget.descriptors, DescriptorBudget.reserve + 2 * DescriptorBudget.reservePerLoop)
    }
}

/// Issue 20: a daemon's adds, one after another, each within the limit alone, crept up to EMFILE:
/// the budget counted only the new mappings.
final class DescriptorBudgetOpenTests: XCTestCase {
    func testWhatIsOpenCountsTowardsTheLimit() throws {
        let budget = DescriptorBudget(try mappings("127.0.0.1:8000-8099:8000-8099"), options: options(threads: 1))
        XCTAssertNil(budget.refusal(limit: 1024, open: 0))
        // A fresh process's few (standard streams) are in the reserve already.
        XCTAssertNil(budget.refusal(limit: 119, open: 3))
        XCTAssertEqual(
            budget.refusal(limit: 1024, open: 1000)?.description,
            "100 listening sockets need 119 file descriptors beside the 1000 open, the limit is 1024 (ulimit -n)"
        )
        XCTAssertNil(budget.refusal(limit: 119 + 1000 - 16, open: 1000))
        XCTAssertNotNil(budget.refusal(limit: 119 + 1000 - 17, open: 1000))
    }
}
