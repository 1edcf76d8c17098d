import Mappings
import Publishing
import Testing

private func mappings(_ specs: String...) throws -> [PortMapping] {
    try specs.flatMap { try PortSpec(parsing: $0).mappings(to: .v4(172, 17, 0, 2)) }
}

private func options(threads: Int, mode: Mode = .userspace) -> PublishOptions {
    var options = PublishOptions()
    options.threads = threads
    options.mode = mode
    return options
}

@Suite struct DescriptorBudgetTests {
    @Test func oneHostAddressIsOneListenerPerLoop() throws {
        let budget = DescriptorBudget(try mappings("127.0.0.1:8080:80", "[::1]::53/udp"), options: options(threads: 4))
        #expect(budget.listeners == 2 * 4)
        #expect(budget.descriptors == 8 + DescriptorBudget.reserve + 4 * DescriptorBudget.reservePerLoop)
    }

    @Test func allAddressesAreTwoListenersExceptInKernelMode() throws {
        let all = try mappings("8080:80", "80-89")
        #expect(DescriptorBudget(all, options: options(threads: 1)).listeners == 11 * 2)
        #expect(DescriptorBudget(all, options: options(threads: 1, mode: .hybrid)).listeners == 11 * 2)
        #expect(DescriptorBudget(all, options: options(threads: 1, mode: .kernel)).listeners == 11)
    }

    /// A host range for one container port binds one port of it: one listener per address, not the range.
    @Test func hostRangeForOnePortIsOneListener() throws {
        #expect(DescriptorBudget(try mappings("127.0.0.1:8000-8999:80"), options: options(threads: 1)).listeners == 1)
    }

    @Test func noThreadsCountAsOneLoop() throws {
        let budget = DescriptorBudget(try mappings("127.0.0.1:80:80"), options: options(threads: 0))
        #expect(budget.listeners == 1)
        #expect(budget.descriptors == 1 + DescriptorBudget.reserve + DescriptorBudget.reservePerLoop)
    }

    @Test func issueExampleIsRefusedInOneLine() throws {
        let budget = DescriptorBudget(try mappings("9278-47650"), options: options(threads: 1))
        #expect(budget.listeners == 76746)
        #expect(budget.descriptors == 76765)
        #expect(
            budget.refusal(limit: 20000)?.description
                == "76746 listening sockets need 76765 file descriptors, the limit is 20000 (ulimit -n)"
        )
        #expect(budget.refusal(limit: 76765) == nil)
        #expect(budget.refusal(limit: 76764) != nil)
        #expect(budget.refusal(limit: UInt64.max) == nil)
    }

    @Test func oneListenerIsSingular() throws {
        let budget = DescriptorBudget(try mappings("127.0.0.1:80:80"), options: options(threads: 1))
        #expect(
            budget.refusal(limit: 3)?.description
                == "1 listening socket needs 20 file descriptors, the limit is 3 (ulimit -n)"
        )
    }

    @Test func nothingToBindNeedsOnlyTheReserve() {
        let budget = DescriptorBudget([], options: options(threads: 2))
        #expect(budget.listeners == 0)
        #expect(budget.descriptors == DescriptorBudget.reserve + 2 * DescriptorBudget.reservePerLoop)
    }
}

/// Issue 20: a daemon's adds, one after another, each within the limit alone, crept up to EMFILE:
/// the budget counted only the new mappings.
@Suite struct DescriptorBudgetOpenTests {
    @Test func whatIsOpenCountsTowardsTheLimit() throws {
        let budget = DescriptorBudget(try mappings("127.0.0.1:8000-8099:8000-8099"), options: options(threads: 1))
        #expect(budget.refusal(limit: 1024, open: 0) == nil)
        // A fresh process's few (standard streams) are in the reserve already.
        #expect(budget.refusal(limit: 119, open: 3) == nil)
        #expect(
            budget.refusal(limit: 1024, open: 1000)?.description
                == "100 listening sockets need 119 file descriptors beside the 1000 open, the limit is 1024 (ulimit -n)"
        )
        #expect(budget.refusal(limit: 119 + 1000 - 16, open: 1000) == nil)
        #expect(budget.refusal(limit: 119 + 1000 - 17, open: 1000) != nil)
    }
}
