// The kernel path's part of publishing: DNAT rules for new ports in one batch, and the
// conntrack entries of UDP flows that would otherwise keep going where a port no longer leads.

import Glibc
import LinuxIO
import Logging
import Mappings
import Netfilter
import Relay
import Synchronization

extension Publisher {
    /// The id of a new publication, with the DNAT rules of `ports` installed under it first in
    /// kernel and hybrid mode (all or none: a refused batch throws and publishes nothing). The
    /// one step `add` and `adopt` share before their listeners go to the loops.
    func newPublication(installing ports: [BoundPort]) throws(PublishError) -> Int {
        if options.mode != .userspace && !ports.isEmpty { rulesByID[nextID] = try installRules(for: ports) }
        return nextPublicationID()
    }

    /// The next publication's id, taken.
    func nextPublicationID() -> Int {
        defer { nextID += 1 }
        return nextID
    }

    func installRules(for newPorts: [BoundPort]) throws(PublishError) -> [DNATRule] {
        if options.mode == .kernel, let port = newPorts.first(where: { !KernelPath.canServe($0) }) {
            throw PublishError(KernelPath.refusal(port))
        }
        let rules = newPorts.filter(KernelPath.canServe).map(KernelPath.rule(for:))
        if rules.isEmpty { return [] }
        do {
            let table = try natTable ?? NatTable(name: options.tableName ?? NatTable.defaultName())
            natTable = table
            try table.add(rules)
        } catch {
            throw PublishError("\(error)", isKernelPathFailure: true)
        }
        kernelRules += rules
        // UDP flows to the host port that began before its element: nat sees a flow's first packet
        // only, so a client that keeps sending would keep reaching the host, never the container.
        for rule in rules where rule.proto == .udp {
            _ = try? Conntrack.deleteUnNATedUDPFlows(toPort: rule.hostPort, v6: (rule.hostIP ?? rule.containerIP).isV6)
        }
        return rules
    }

    /// The conntrack entries of UDP flows through `rules` that are gone: DNATed ones would keep
    /// going to the old target, un-NATed ones to the host port (there since before the element,
    /// or through the relay) to whatever serves it next. Docker flushes by the container port
    /// only (moby#53384), portmap only at add.
    static func forgetUDPFlows(of rules: [DNATRule]) {
        for rule in rules where rule.proto == .udp {
            _ = try? Conntrack.deleteUDPFlows(to: rule.containerIP, port: rule.containerPort)
            _ = try? Conntrack.deleteUnNATedUDPFlows(toPort: rule.hostPort, v6: (rule.hostIP ?? rule.containerIP).isV6)
        }
    }

    /// Per-rule counters of the kernel path: new connections/flows DNATed, and their first packets' bytes.
    package func kernelCounters() -> [DNATRule: (packets: UInt64, bytes: UInt64)] {
        controlLock.withLock { _ in (try? natTable?.counters()) ?? [:] }
    }
}
