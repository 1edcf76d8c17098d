// Publishing turns a set of port mappings into bound listeners and running event loops,
// and takes them down again. The CLI (standalone and docker-proxy modes) and bench/
// both drive this one type, so the CLI stays thin.

import Glibc
import LinuxIO
import Logging
import Mappings
import Netfilter
import Relay
import Synchronization
import SystemPackage

/// Something went wrong while publishing; the text is the one line a user sees.
package struct PublishError: Error, CustomStringConvertible, Sendable {
    package let description: String
    /// The kernel refused berth's nftables table: the userspace relay alone could still serve.
    package let isKernelPathFailure: Bool
    /// Why binding a host port failed (EADDRINUSE, EACCES), for callers that answer by kind.
    package let bindErrno: Errno?
    package init(_ description: String, isKernelPathFailure: Bool = false, bindErrno: Errno? = nil) {
        self.description = description
        self.isKernelPathFailure = isKernelPathFailure
        self.bindErrno = bindErrno
    }
}

/// One bound listener: which mapping it serves and where it listens.
package struct BoundPort: Sendable {
    package let mapping: PortMapping
    package let address: SocketAddress
    package let target: SocketAddress

    /// `docker port` style: `80/tcp -> 0.0.0.0:49153`.
    package var line: String { "\(mapping.containerSide) -> \(address)" }
}

extension IPAddress {
    /// A socket address's IP: 4 bytes make IPv4, else the 16 of IPv6 (what a SocketAddress holds).
    package init(_ address: SocketAddress) {
        self = address.withIPBytes { raw in
            raw.count == 4
                ? .v4(raw[0], raw[1], raw[2], raw[3])
                : .v6(
                    Bytes16((raw.loadUnaligned(as: UInt64.self), raw.loadUnaligned(fromByteOffset: 8, as: UInt64.self)))
                )
        }
    }
}

package struct PublishOptions: Sendable {
    package var relay = RelayConfig()
    /// Event loops (threads). Each loop has its own listener per mapping and host address
    /// (SO_REUSEPORT; the kernel spreads TCP clients and UDP flows over them). An adopted
    /// socket (`-use-listen-fd`) is one: every loop serves it if TCP, one loop if UDP.
    package var threads = 1
    /// Loops for bulk TCP connections (`RelayConfig.bulkAfter`), besides `threads`; 0: none, every
    /// connection stays on the loop that accepted it.
    package var bulkLoops = 0
    /// The bulk loops' threads run SCHED_BATCH at this nice value (0 to 19).
    package var bulkNice: Int32 = 10
    package var mode = Mode.userspace
    /// How long each loop polls before it sleeps (0: never polls). Cuts the wake-up latency of an
    /// idle CPU, at the cost of CPU time while traffic pauses.
    package var busyPoll: Duration = .zero
    /// berth's nftables table (`inet` family); nil: `berth_<pid>`, so several berths coexist.
    package var tableName: String?
    package init() {}
}

/// The ports of one `add` (or `bind`), removed together.
package struct PublicationID: Hashable, Sendable, CustomStringConvertible {
    package let raw: Int
    package var description: String { "\(raw)" }
}

/// Binds and runs. `bind`, `add`, `remove` and `close` come from one control thread at a time
/// (the caller's, or a daemon's control thread while `run` runs on another); the loops learn
/// of changes through messages (`LoopWaker.post`) and are never touched from another thread.
package final class Publisher {
    /// One host address of a mapping: a listener per loop, or one that the loops share. A
    /// dual-stack `::` socket passed by systemd serves two host addresses (`0.0.0.0` and `::`).
    struct Binding: Sendable {
        let ports: [BoundPort]
        let listeners: [Listener]
        /// The relay's options for this port, its name in log lines among them.
        var options = MappingOptions()
        /// UDP: the flows of this host address over all loops (`--udp-max-flows`); nil: each relay
        /// its own.
        var udpBudget: UDPFlowBudget?
        var shared: Bool { listeners.count == 1 }
        init(port: BoundPort, listeners: [Listener]) { self.init(ports: [port], listeners: listeners) }
        init(ports: [BoundPort], listeners: [Listener]) {
            self.ports = ports
            self.listeners = listeners
        }
    }

    /// What the loops are, and what is published; shared by the control thread and `run`.
    struct Live {
        var publications: [Int: [Binding]] = [:]
        /// Who asked for a publication (`add(_:owner:)`), for metrics' `owner` label.
        var owners: [Int: String] = [:]
        /// While `run` runs: one per loop.
        var shares: [LoopShare] = []
        var running = false
    }

    package let options: PublishOptions
    let live = Mutex<Live>(Live())
    /// Held by the control calls and by a scrape's kernel counters; see `serialized`.
    let controlLock = Mutex(())
    var nextID = 0
    var rulesByID: [Int: [DNATRule]] = [:]
    let logger: Logger
    var natTable: NatTable?
    /// The DNAT rules installed for `ports`.
    package internal(set) var kernelRules: [DNATRule] = []
    /// Stops the loops from any thread, also before they start.
    package let stopper = Stopper()
    /// The loops' counters, summed when `run` returned.
    var finalCounters = MappingCounters()

    package init(options: PublishOptions = PublishOptions(), logger: Logger = Logger(label: "berth")) {
        self.options = options
        self.logger = logger
    }

    /// Every port published now, in the order added.
    package var ports: [BoundPort] {
        live.withLock { state in state.publications.sorted { $0.key < $1.key }.flatMap { $0.value.flatMap(\.ports) } }
    }

    /// Runs one of the control calls. They come from one control thread at a time, but a
    /// scrape (`metrics`) may come from another: this keeps the kernel path's state and its
    /// netlink socket to one caller at a time.
    func serialized<R: Sendable>(_ body: () throws(PublishError) -> R) throws(PublishError) -> R {
        try controlLock.withLock { _ throws(PublishError) -> R in try body() }
    }

    func publish(_ asked: [Binding], id: Int, owner: String? = nil) {
        // Every port also gets what the options ask of all, and its name for the log lines.
        var completed = asked
        for i in completed.indices {
            let extra = completed[i].options
            completed[i].options = MappingOptions(
                proxyProtocol: extra.proxyProtocol ?? options.relay.proxyProtocol,
                proxyProtocolUDP: extra.proxyProtocolUDP || options.relay.proxyProtocolUDP,
                name: completed[i].ports.first.map(Self.logName)
            )
        }
        let bound = completed
        let mode = options.mode
        let logger = self.logger
        live.withLock { state in
            state.publications[id] = bound
            state.owners[id] = owner
            guard state.running else { return }
            for share in state.shares where !share.context.isBulk {
                share.context.loop.waker.post {
                    do {
                        try Self.serve(bound, id: id, on: share, mode: mode)
                    } catch {
                        logger.error(
                            "loop \(share.index): cannot serve \(bound.flatMap(\.ports).map(\.address)): \(error)"
                        )
                    }
                }
            }
        }
    }

    /// Stops serving the ports of `id` at once (their listeners leave every loop and close, so
    /// the ports are free), removes their DNAT rules and the conntrack entries of their UDP
    /// flows; open TCP connections get `drain` to finish, then are reset. UDP flows close.
    @discardableResult
    package func remove(_ id: PublicationID, drain: Duration = .seconds(10)) throws(PublishError) -> [BoundPort] {
        try serialized { () throws(PublishError) in try removeSerialized(id, drain: drain) }
    }

    func removeSerialized(_ id: PublicationID, drain: Duration) throws(PublishError) -> [BoundPort] {
        // Only the ports leave the lock: the listeners must not outlive the loops' last accept
        // (`TCPAcceptor.stop(drain:)`), or clients queued meanwhile are reset when they close.
        let removed: [BoundPort]? = live.withLock { state in
            guard let bound = state.publications.removeValue(forKey: id.raw) else { return nil }
            state.owners[id.raw] = nil
            for share in state.shares {
                share.context.loop.waker.post {
                    for served in share.served.removeValue(forKey: id.raw) ?? [] {
                        switch served {
                        case .tcp(let acceptor): acceptor.stop(drain: drain)
                        case .udp(let relay): relay.stop()
                        }
                    }
                }
            }
            return bound.flatMap(\.ports)
        }
        guard let removed else { throw PublishError("no ports published as \(id)") }
        if let rules = rulesByID.removeValue(forKey: id.raw), let table = natTable {
            do { try table.remove(rules) } catch { throw PublishError("\(error)", isKernelPathFailure: true) }
            kernelRules.removeAll { rules.contains($0) }
            Self.forgetUDPFlows(of: rules)
        }
        return removed
    }

    /// Removes the DNAT rules in one batch (the table goes), forgets the conntrack entries of UDP
    /// flows they created (or those flows would keep going to the container for minutes), and
    /// closes every listener. The loops must have stopped.
    package func close() {
        controlLock.withLock { _ in closeSerialized() }
    }

    func closeSerialized() {
        if let table = natTable {
            do { try table.delete() } catch { logger.error("\(error)") }
            natTable = nil
            Self.forgetUDPFlows(of: kernelRules)
            kernelRules.removeAll()
        }
        live.withLock { state in
            state.publications.removeAll()
            state.owners.removeAll()
        }
        rulesByID.removeAll()
    }

    deinit { close() }
}
