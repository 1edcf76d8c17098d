// The loops: one per thread (`--threads`) serving every publication's listeners, bulk loops
// beside them, signals on loop 0; and what each loop serves (`LoopShare`).

import Glibc
import LinuxIO
import Logging
import Mappings
import Netfilter
import Relay
import Synchronization

extension Publisher {
    /// Runs the loops until SIGINT/SIGTERM or `stop()`. Loop 0 runs on the calling thread.
    /// Signals are blocked here first so that only the signalfd sees them. When it returns,
    /// every loop has closed what it owned (listeners, connections, flows, pipes, its epoll),
    /// so the ports can be bound again; DNAT rules stay until `close()`. Runs once.
    /// With `onHangup`, SIGHUP is watched too and calls it on loop 0's thread (berth reopens its
    /// log file) instead of stopping.
    package func run(signals: [Int32] = [SIGINT, SIGTERM], onHangup: (() -> Void)? = nil) throws(PublishError) {
        let signals = signals + (onHangup == nil ? [] : [SIGHUP])
        if !signals.isEmpty { EventLoop.blockSignals(signals) }
        let loopCount = max(1, options.threads)
        let bulkCount = options.mode == .kernel || options.relay.bulkAfter <= 0 ? 0 : max(0, options.bulkLoops)
        var loops: [EventLoop] = []
        var shares: [LoopShare] = []
        defer {
            for loop in loops { loop.closeAll() }
            finalCounters = shares.map(\.context.counters).reduce(MappingCounters(), +)
            // The loops closed every listener they served: nothing is published any more.
            live.withLock { state in
                state.running = false
                state.shares.removeAll()
                state.publications.removeAll()
                state.owners.removeAll()
            }
            stopper.forgetLoops()
        }
        do {
            for index in 0..<loopCount {
                let loop = try EventLoop()
                loops.append(loop)
                loop.busyPoll = options.busyPoll.nanosecondsClamped
                let context = RelayContext(loop: loop, config: options.relay, logger: logger)
                shares.append(LoopShare(index: index, loopCount: loopCount, context: context))
                stopper.add(loop.waker)
            }
            var bulkContexts: [RelayContext] = []
            for index in 0..<bulkCount {
                let loop = try EventLoop()
                loops.append(loop)
                let context = RelayContext(loop: loop, config: options.relay, logger: logger, bulk: true)
                bulkContexts.append(context)
                shares.append(LoopShare(index: loopCount + index, loopCount: loopCount, context: context))
                stopper.add(loop.waker)
            }
            for share in shares where !share.context.isBulk { share.context.bulkLoops = bulkContexts }
            // From here on an `add` posts to the loops; what was published before is served now,
            // on this thread, before any loop runs.
            let published = live.withLock { state in
                state.shares = shares
                state.running = true
                return state.publications
            }
            for share in shares where !share.context.isBulk {
                for (id, bound) in published.sorted(by: { $0.key < $1.key }) {
                    try Self.serve(bound, id: id, on: share, mode: options.mode)
                }
            }
            if !signals.isEmpty {
                let stopper = self.stopper
                let logger = self.logger
                try loops[0].watchSignals(signals) { signal in
                    if signal == SIGHUP, let onHangup {
                        onHangup()
                        return
                    }
                    logger.debug("signal \(signal): stopping")
                    stopper.stop()
                }
            }
        } catch {
            throw PublishError("\(error)")
        }
        var threads: [LoopThread] = []
        for (i, loop) in loops.enumerated().dropFirst() {
            let handover = Handover(loop)
            let logger = self.logger
            let bulk = i >= loopCount
            let nice = options.bulkNice
            do {
                threads.append(
                    try LoopThread(name: bulk ? "berth-bulk-\(i - loopCount)" : "berth-loop-\(i)") {
                        if bulk {
                            // Bulk gives way: woken interactive loops and other processes run first.
                            do { try lowerThreadPriority(batch: true, nice: nice) } catch {
                                logger.warning("bulk loop \(i - loopCount): \(error)")
                            }
                        }
                        do { try handover.value.run() } catch { logger.critical("loop \(i): \(error)") }
                    }
                )
            } catch {
                stop()
                for thread in threads { thread.join() }
                throw PublishError("\(error)")
            }
        }
        var failure: SyscallError?
        do { try loops[0].run() } catch {
            failure = error
            stop()
        }
        for thread in threads { thread.join() }
        if let failure { throw PublishError("event loop: \(failure)") }
    }

    /// How log lines name a port: its mapping as `-p` would spell it, with the host address and port
    /// it got (`127.0.0.1:49153:172.17.0.2:80/tcp`), as the docker-proxy mode names its one.
    static func logName(_ port: BoundPort) -> String {
        var mapping = port.mapping
        mapping.hostIP = IPAddress(port.address)
        mapping.hostPort = .fixed(port.address.port)
        return mapping.description
    }

    /// Starts serving `bound` on one loop, on that loop's thread (or before it runs). Each loop
    /// serves its own listener of a port; a shared one (adopted) is TCP for every loop, UDP for
    /// one, picked round-robin.
    static func serve(_ bound: [Binding], id: Int, on share: LoopShare, mode: Mode) throws(SyscallError) {
        guard mode != .kernel else { return }
        var sharedUDP = id
        for binding in bound {
            let listener = binding.listeners[binding.shared ? 0 : share.index]
            let target = binding.ports[0].target
            if listener.isTCP {
                let shared = binding.shared && share.loopCount > 1
                let acceptor = TCPAcceptor(
                    listener: listener,
                    target: target,
                    context: share.context,
                    shared: shared,
                    options: binding.options
                )
                try acceptor.start()
                share.served[id, default: []].append(.tcp(acceptor))
            } else {
                if binding.shared {
                    defer { sharedUDP += 1 }
                    guard sharedUDP % share.loopCount == share.index else { continue }
                }
                let relay = UDPRelay(
                    listener: listener,
                    target: target,
                    context: share.context,
                    options: binding.options,
                    budget: binding.udpBudget
                )
                try relay.start()
                share.served[id, default: []].append(.udp(relay))
            }
        }
    }

    /// Stops every loop; from another thread use `stopper.stop()`.
    package func stop() { stopper.stop() }

    /// Counters of all loops, summed. Call after `run` returns.
    package var counters: MappingCounters { finalCounters }
}

/// What one loop serves, by publication. Made before the loop runs, then touched only on the
/// loop's thread (posted work), so it needs no lock.
final class LoopShare: @unchecked Sendable {
    enum Served {
        case tcp(TCPAcceptor)
        case udp(UDPRelay)
    }

    let index: Int
    let loopCount: Int
    let context: RelayContext
    var served: [Int: [Served]] = [:]

    init(index: Int, loopCount: Int, context: RelayContext) {
        self.index = index
        self.loopCount = loopCount
        self.context = context
    }
}
