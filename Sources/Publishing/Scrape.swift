// A scrape's counters: every loop copies its own on its thread, the control thread sums them
// per mapping and adds the kernel path's element counters.

import Glibc
import LinuxIO
import Logging
import Mappings
import Netfilter
import Relay
import Synchronization

extension Publisher {
    /// A scrape: every loop copies its per-mapping counters on its own thread (work posted
    /// through its eventfd, after what was posted before, so a removed publication is gone),
    /// the answers are summed per mapping; with the process's descriptors and pooled pipes and,
    /// in kernel and hybrid mode, the DNAT map elements' counters. A loop that has not answered
    /// within `timeout` is left out (`loopsAnswered` says so): a stuck loop cannot hang a scrape.
    /// From the control thread, like `add` and `remove` (the kernel counters use their netlink
    /// socket); the loops go on meanwhile. Allocates: never on a loop's thread.
    package func metrics(timeout: Duration = .seconds(1)) -> PublisherMetrics {
        let answers = LoopAnswers()
        let (loopCount, owners): (Int, [Int: String]) = live.withLock { state in
            guard state.running else { return (0, state.owners) }
            for share in state.shares {
                share.context.loop.waker.post {
                    answers.add(Self.sample(share))
                }
            }
            return (state.shares.count, state.owners)
        }
        let deadline = Semaphore.deadline(after: timeout)
        var answered = 0
        while answered < loopCount && answers.semaphore.wait(until: deadline) { answered += 1 }
        var result = PublisherMetrics()
        result.loops = loopCount
        var byKey: [MappingKey: Int] = [:]
        var byCounters: [ObjectIdentifier: Int] = [:]
        let samples = answers.take()
        for sample in samples {
            result.loopsAnswered += 1
            result.pipesPooled += sample.idlePipes
            result.pipesCreated += sample.pipesCreated
            for (m, countersID) in zip(sample.mappings, sample.countersIDs) {
                let key = MappingKey(publication: m.publication, proto: m.proto, host: m.host)
                if let i = byKey[key] {
                    result.mappings[i].counters += m.counters
                } else {
                    byKey[key] = result.mappings.count
                    var m = m
                    m.owner = owners[m.publication.raw]
                    result.mappings.append(m)
                }
                if let countersID { byCounters[countersID] = byKey[key] }
            }
        }
        // What connections counted on a bulk loop belongs to the mapping that accepted them.
        for sample in samples {
            for (countersID, counters) in sample.movedIn {
                if let i = byCounters[countersID] { result.mappings[i].counters += counters }
            }
        }
        result.mappings.sort {
            ($0.publication.raw, $0.host.port, $0.host.isV6 ? 1 : 0) < (
                $1.publication.raw, $1.host.port, $1.host.isV6 ? 1 : 0
            )
        }
        result.openDescriptors = try? Resources.openDescriptorCount()
        result.descriptorLimit = (try? Limits.openFiles())?.soft
        result.kernel = controlLock.withLock { _ in kernelMetrics(owners: owners) }
        return result
    }

    /// The DNAT map elements' counters, with their owners; under `controlLock`.
    func kernelMetrics(owners: [Int: String]) -> [PublisherMetrics.KernelRule] {
        guard let table = natTable else { return [] }
        var ownerOfRule: [DNATRule: String] = [:]
        for (id, rules) in rulesByID {
            guard let owner = owners[id] else { continue }
            for rule in rules { ownerOfRule[rule] = owner }
        }
        return ((try? table.counters()) ?? [:]).map { rule, counters in
            PublisherMetrics.KernelRule(
                rule: rule,
                owner: ownerOfRule[rule],
                packets: counters.packets,
                bytes: counters.bytes
            )
        }
        .sorted { ($0.rule.hostPort, $0.rule.proto.rawValue) < ($1.rule.hostPort, $1.rule.proto.rawValue) }
    }

    /// One loop's counters, copied on its thread.
    static func sample(_ share: LoopShare) -> LoopSample {
        var mappings: [PublisherMetrics.Mapping] = []
        var countersIDs: [ObjectIdentifier?] = []
        for (id, served) in share.served {
            for handler in served {
                switch handler {
                case .tcp(let acceptor):
                    mappings.append(
                        PublisherMetrics.Mapping(
                            publication: PublicationID(raw: id),
                            proto: .tcp,
                            host: acceptor.listener.address,
                            target: acceptor.target,
                            counters: acceptor.counters
                        )
                    )
                    countersIDs.append(acceptor.countersID)
                case .udp(let relay):
                    mappings.append(
                        PublisherMetrics.Mapping(
                            publication: PublicationID(raw: id),
                            proto: .udp,
                            host: relay.listener.address,
                            target: relay.target,
                            counters: relay.counters
                        )
                    )
                    countersIDs.append(nil)
                }
            }
        }
        return LoopSample(
            mappings: mappings,
            countersIDs: countersIDs,
            movedIn: share.context.movedInCounters(),
            idlePipes: share.context.idlePipes,
            pipesCreated: share.context.pipesCreated
        )
    }
}

struct MappingKey: Hashable {
    let publication: PublicationID
    let proto: Proto
    let host: SocketAddress
}

struct LoopSample: Sendable {
    var mappings: [PublisherMetrics.Mapping]
    /// Each TCP mapping's `TCPAcceptor.countersID`, in step with `mappings`.
    var countersIDs: [ObjectIdentifier?]
    /// A bulk loop's: what moved connections counted there, by their mapping's `countersID`.
    var movedIn: [(countersID: ObjectIdentifier, counters: MappingCounters)]
    var idlePipes: Int
    var pipesCreated: UInt64
}

/// The loops' answers to one scrape. Kept alive by the posted work, so a loop that answers
/// after the scrape gave up writes into it harmlessly.
final class LoopAnswers: Sendable {
    let semaphore = Semaphore()
    private let samples = Mutex<[LoopSample]>([])

    func add(_ sample: LoopSample) {
        samples.withLock { $0.append(sample) }
        semaphore.signal()
    }

    func take() -> [LoopSample] {
        samples.withLock { samples in
            defer { samples.removeAll() }
            return samples
        }
    }
}
