// The plugin's operations (SPEC.md section 2) and the choice made at every call: a berth daemon
// that answers on its control socket serves the ports (owner `cni/<network>/<container>/<ifname>`);
// without one the plugin puts DNAT elements, tagged the same way, into a shared nftables table.
//
// Host ports are reserved: the daemon binds a listener for each, and the table's elements are
// unique by host side, with every check-then-change made under one file lock
// (/run/berth-cni/<table>.lock), so concurrent plugin calls for different containers cannot both
// take a port. The state is the daemon's and the kernel's, never a file of ours.

import Control
import JSON
import LinuxIO
import Mappings
import Netfilter

#if canImport(Glibc)
import Glibc
#endif

/// What a successful call prints: the result on stdout (nil for none) and notices for stderr.
package struct PluginOutput: Sendable, Equatable {
    package var stdout: String?
    package var notices: [String] = []
}

package enum Plugin {
    /// Runs one call. `stdin` is the configuration as the runtime sent it.
    package static func run(_ environment: CNIEnvironment, stdin: [UInt8]) -> Result<PluginOutput, CNIError> {
        do throws(CNIError) {
            if environment.command == .version { return .success(version(stdin)) }
            let config = try PluginConfig.parse(stdin)
            var call = Call(environment: environment, config: config)
            switch environment.command {
            case .add: try call.add()
            case .del: try call.delete()
            case .check: try call.check()
            case .gc: try call.collectGarbage()
            case .status: try call.status()
            case .version: break
            }
            return .success(call.output)
        } catch {
            return .failure(error)
        }
    }

    private static func version(_ stdin: [UInt8]) -> PluginOutput {
        let asked = PluginConfig.askedVersion(stdin)
        let versions = JSONValue.array(PluginConfig.supportedVersions.map { .string($0) })
        return PluginOutput(
            stdout: JSONValue.object([("cniVersion", .string(asked)), ("supportedVersions", versions)]).serialized()
        )
    }
}

/// One call's work.
struct Call {
    let environment: CNIEnvironment
    let config: PluginConfig
    var output = PluginOutput()

    init(environment: CNIEnvironment, config: PluginConfig) {
        self.environment = environment
        self.config = config
    }

    /// Whose ports these are: one attachment of one network.
    var owner: String { "\(ownerPrefix)\(environment.containerID)/\(environment.ifname)" }
    var ownerPrefix: String { "cni/\(config.name)/" }
    var daemon: Daemon { Daemon(path: config.control) }

    // MARK: ADD

    mutating func add() throws(CNIError) {
        guard config.prevResult != nil else {
            throw CNIError(
                CNIError.invalidConfig,
                "berth-cni is a chained plugin: it needs a prevResult (put it after bridge, ptp or another interface plugin)"
            )
        }
        defer { output.stdout = passThrough() }
        guard !config.portMappings.isEmpty else { return }
        try checkOwnerLength()
        let addresses = try config.containerAddresses(ifname: environment.ifname)
        guard addresses.v4 != nil || addresses.v6 != nil else {
            throw CNIError(
                CNIError.invalidConfig,
                "prevResult has no IP address for interface \(environment.ifname) in the container"
            )
        }
        try underLock { call throws(CNIError) in try call.addLocked(addresses) }
    }

    private mutating func addLocked(_ addresses: (v4: IPAddress?, v6: IPAddress?)) throws(CNIError) {
        let viaDaemon = daemon.answers
        let table = try openTable()
        // What an earlier ADD of this attachment left (a runtime retrying) gives way, wherever it is.
        let rules = try read(table, ignoringPermission: viaDaemon)
        if rules.contains(where: { $0.tag == owner }) {
            try change { () throws(NetfilterError) in try table.remove { $0 == owner } }
        }
        if viaDaemon { try daemon.remove(owner: owner) }
        let taken = rules.filter { $0.tag != owner }
        for entry in config.portMappings {
            if let holder = taken.first(where: { Self.clash(entry, $0.rule) }) {
                throw CNIError(
                    CNIError.hostPortTaken,
                    "host port \(entry.hostSide) is taken",
                    details:
                        "table inet \(config.table) maps it to \(holder.rule.containerIP.bracketed):\(holder.rule.containerPort) for \(holder.tag ?? "someone else")"
                )
            }
        }
        if viaDaemon {
            try daemon.add(config.portMappings, addresses: addresses, owner: owner)
            return
        }
        let kernel = try kernelRules(addresses)
        try probeHostPorts(addresses)
        try change { () throws(NetfilterError) in
            try table.create()
            try table.add(kernel, tag: owner)
        }
        // Flows that reached the host before the element existed would keep doing so.
        for rule in kernel where rule.proto == .udp {
            do {
                _ = try Conntrack.deleteUnNATedUDPFlows(toPort: rule.hostPort, v6: rule.family == .v6)
            } catch {
                output.notices.append("notice: \(error)")
            }
        }
        if let notice = Self.loopbackNotice(config.portMappings) {
            output.notices.append("notice: no berth daemon answers on \(config.control): " + notice)
        }
    }

    /// The DNAT rules for the mappings, or why one needs a daemon.
    private func kernelRules(_ addresses: (v4: IPAddress?, v6: IPAddress?)) throws(CNIError) -> [DNATRule] {
        var rules: [DNATRule] = []
        for entry in config.portMappings {
            if let host = entry.hostIP, host.isLoopback {
                throw CNIError(
                    CNIError.needsDaemon,
                    "\(entry.hostSide) is on the host's loopback, which nftables DNAT does not serve",
                    details:
                        "no berth daemon answers on \(config.control); run `berth daemon` to serve loopback in userspace"
                )
            }
            let targets: [IPAddress]
            if let host = entry.hostIP {
                guard let target = host.isV6 ? addresses.v6 : addresses.v4 else {
                    throw CNIError(
                        CNIError.needsDaemon,
                        "\(entry.hostSide): the container has no IPv\(host.isV6 ? 6 : 4) address, and DNAT cannot change the address family",
                        details:
                            "no berth daemon answers on \(config.control); a daemon relays across families in userspace"
                    )
                }
                targets = [target]
            } else {
                targets = [addresses.v4, addresses.v6].compactMap { $0 }
            }
            for target in targets {
                rules.append(
                    DNATRule(
                        proto: entry.proto,
                        hostIP: entry.hostIP,
                        hostPort: entry.hostPort,
                        containerIP: target,
                        containerPort: entry.containerPort
                    )
                )
            }
        }
        return rules
    }

    /// A host process listening on a port would lose its traffic to DNAT: refuse as bind would.
    private func probeHostPorts(_ addresses: (v4: IPAddress?, v6: IPAddress?)) throws(CNIError) {
        for entry in config.portMappings {
            let hosts = entry.hostIP.map { [$0] } ?? [IPAddress.anyV4, IPAddress.anyV6]
            for host in hosts {
                let address = SocketAddress(ip: host.bytes, port: entry.hostPort)
                let inUse: Bool
                do {
                    inUse = try Socket.portInUse(address, udp: entry.proto == .udp)
                } catch {
                    throw CNIError(CNIError.invalidConfig, "\(entry.hostSide): \(error)")
                }
                if inUse {
                    throw CNIError(
                        CNIError.hostPortTaken,
                        "host port \(entry.hostSide) is taken",
                        details: "a process on the host is bound to \(address)"
                    )
                }
            }
        }
    }

    /// What ADD and CHECK say of mappings on all addresses that only nftables serves; nil for none.
    private static func loopbackNotice(_ served: [PortMapEntry]) -> String? {
        let wildcards = served.filter { $0.hostIP == nil }.map(\.hostSide)
        guard !wildcards.isEmpty else { return nil }
        return
            "\(wildcards.joined(separator: ", ")) served by nftables DNAT only; connections to the host's loopback are not forwarded"
    }

    /// Two host sides that would catch the same packets, or could not both be bound.
    static func clash(_ entry: PortMapEntry, _ rule: DNATRule) -> Bool {
        guard entry.proto == rule.proto, entry.hostPort == rule.hostPort else { return false }
        switch (entry.hostIP, rule.hostIP) {
        case (nil, _): return true
        case (let host?, nil): return host.isV6 == (rule.family == .v6)
        case (let host?, let other?): return host == other
        }
    }

    // MARK: DEL

    mutating func delete() throws(CNIError) {
        // An owner too long for a comment was refused at ADD: nothing of it exists.
        guard owner.utf8.count <= 127 else { return }
        let viaDaemon = daemon.answers
        if viaDaemon { try daemon.remove(owner: owner) }
        let owner = self.owner
        try removeFromTable("the port mappings of \(owner)", ignoringPermission: viaDaemon) { $0 == owner }
    }

    /// Removes, under the lock, the table's elements whose tag `matches` accepts, and ends their
    /// UDP flows. With `ignoringPermission`, no CAP_NET_ADMIN means nothing to remove: a call
    /// without it cannot have added any.
    private mutating func removeFromTable(
        _ what: String,
        ignoringPermission: Bool,
        where matches: (String) -> Bool
    ) throws(CNIError) {
        let table = try openTable()
        try underLock { call throws(CNIError) in
            do throws(NetfilterError) {
                call.forgetUDPFlows(try table.remove(where: matches))
            } catch  where error.errno == EPERM && ignoringPermission {
            } catch {
                throw CNIError(CNIError.ioFailure, "cannot remove \(what)", details: error.description)
            }
        }
    }

    /// UDP flows in conntrack keep going to a removed target until they expire: end them.
    private mutating func forgetUDPFlows(_ removed: [TaggedRule]) {
        for tagged in removed where tagged.rule.proto == .udp {
            do {
                _ = try Conntrack.deleteUDPFlows(to: tagged.rule.containerIP, port: tagged.rule.containerPort)
            } catch {
                output.notices.append("notice: \(error)")
            }
        }
    }

    // MARK: CHECK

    mutating func check() throws(CNIError) {
        guard config.prevResult != nil else {
            throw CNIError(CNIError.invalidConfig, "CHECK needs the prevResult of the ADD")
        }
        guard !config.portMappings.isEmpty else { return }
        let addresses = try config.containerAddresses(ifname: environment.ifname)
        let targets = Set([addresses.v4, addresses.v6].compactMap { $0 })
        let viaDaemon = daemon.answers
        let served = viaDaemon ? try daemon.ports(owner: owner) : []
        let rules = try read(try openTable(), ignoringPermission: viaDaemon).filter { $0.tag == owner }.map(\.rule)
        var kernelOnly: [PortMapEntry] = []
        for entry in config.portMappings {
            let inDaemon = served.contains { port in
                port.proto == entry.proto && port.hostPort == entry.hostPort
                    && port.containerPort == entry.containerPort
                    && targets.contains(port.target) && (entry.hostIP == nil || entry.hostIP == port.hostIP)
            }
            let inTable = rules.contains { rule in
                rule.proto == entry.proto && rule.hostPort == entry.hostPort
                    && rule.containerPort == entry.containerPort
                    && targets.contains(rule.containerIP) && rule.hostIP == entry.hostIP
            }
            if !inDaemon && !inTable {
                throw CNIError(
                    CNIError.mappingMissing,
                    "port mapping \(entry) of \(owner) is missing",
                    details: viaDaemon
                        ? "neither the berth daemon on \(config.control) nor table inet \(config.table) serves it"
                        : "table inet \(config.table) has no element for it, and no berth daemon answers on \(config.control)"
                )
            }
            if !inDaemon { kernelOnly.append(entry) }
        }
        if let notice = Self.loopbackNotice(kernelOnly) { output.notices.append("notice: " + notice) }
    }

    // MARK: GC

    mutating func collectGarbage() throws(CNIError) {
        guard let valid = config.validAttachments else {
            throw CNIError(CNIError.invalidConfig, "GC needs cni.dev/valid-attachments")
        }
        let prefix = ownerPrefix
        func stale(_ tag: String) -> Bool {
            tag.hasPrefix(prefix) && !valid.contains(String(tag.dropFirst(prefix.count)))
        }
        var failures: [String] = []
        let viaDaemon = daemon.answers
        if viaDaemon {
            do {
                for owner in Set(try daemon.ports(owner: nil).compactMap(\.owner)) where stale(owner) {
                    try daemon.remove(owner: owner)
                }
            } catch {
                failures.append(error.description)
            }
        }
        do throws(CNIError) {
            try removeFromTable("stale elements", ignoringPermission: viaDaemon, where: stale)
        } catch {
            failures.append(error.description)
        }
        if !failures.isEmpty {
            throw CNIError(CNIError.ioFailure, "GC left stale port mappings", details: failures.joined(separator: "; "))
        }
    }

    // MARK: STATUS

    func status() throws(CNIError) {
        if daemon.answers { return }
        guard Capability.hasNetAdmin() else {
            throw CNIError(
                CNIError.notAvailable,
                "berth-cni cannot publish ports here",
                details:
                    "no berth daemon answers on \(config.control), and without CAP_NET_ADMIN it cannot program nftables"
            )
        }
        do {
            _ = try SharedNatTable(name: config.table).rules()
        } catch {
            throw CNIError(CNIError.notAvailable, "berth-cni cannot program nftables here", details: error.description)
        }
    }

    // MARK: helpers

    /// prevResult, in the configuration's version (the plugin changes nothing in it).
    private func passThrough() -> String {
        guard case .object(let members)? = config.prevResult else { return "{}" }
        var out = members.filter { $0.0 != "cniVersion" }
        out.insert(("cniVersion", .string(config.cniVersion)), at: 0)
        return JSONValue.object(out).serialized()
    }

    private func checkOwnerLength() throws(CNIError) {
        if owner.utf8.count > 127 {
            throw CNIError(
                CNIError.invalidConfig,
                "network name, container id and interface name are too long together",
                details: "\(quoted(owner)) is \(owner.utf8.count) bytes; an nftables element comment holds 127"
            )
        }
    }

    /// Where the locks live: a directory of root's, not the daemon's /run/berth (its user could
    /// plant a link there that root would follow).
    static let lockDirectory = "/run/berth-cni"

    /// Runs `body` holding the lock that makes a check and the change after it one step.
    private mutating func underLock(_ body: (inout Call) throws(CNIError) -> Void) throws(CNIError) {
        let lock: Descriptor
        do {
            lock = try FileLock.exclusive("\(config.table).lock", in: Self.lockDirectory)
        } catch {
            throw CNIError(CNIError.ioFailure, "cannot take berth-cni's lock", details: error.description)
        }
        try body(&self)
        lock.close()
    }

    /// The shared table's netlink socket, one for the whole call.
    private func openTable() throws(CNIError) -> SharedNatTable {
        do {
            return try SharedNatTable(name: config.table)
        } catch {
            throw CNIError(CNIError.ioFailure, "cannot program nftables", details: error.description)
        }
    }

    /// A change to the table: a key the kernel holds already is a host port taken.
    private func change(_ body: () throws(NetfilterError) -> Void) throws(CNIError) {
        do {
            try body()
        } catch  where error.errno == EEXIST {
            throw CNIError(CNIError.hostPortTaken, "a host port is taken", details: error.description)
        } catch {
            throw CNIError(CNIError.ioFailure, "cannot program nftables", details: error.description)
        }
    }

    /// The table's rules; none where there is no table. Without CAP_NET_ADMIN, and with
    /// `ignoringPermission`, none either: a call without it cannot have added any.
    private func read(_ table: SharedNatTable, ignoringPermission: Bool) throws(CNIError) -> [TaggedRule] {
        do {
            return try table.rules()
        } catch  where error.errno == EPERM && ignoringPermission {
            return []
        } catch {
            throw CNIError(CNIError.ioFailure, "cannot read table inet \(config.table)", details: error.description)
        }
    }
}
