import Synchronization

/// The flows one listener group may hold over all its loops (`--udp-max-flows`). Each loop has
/// its own listener and flow table for the address (SO_REUSEPORT): every loop keeps a small
/// reserve of its own, and the rest is a pool the loops share, counted with an atomic. A loop
/// takes from the pool only for flows beyond its reserve and gives back when one of those ends;
/// when the pool is empty a new client evicts one of its own loop's flows, whose place it takes.
///
/// Why a reserve: with a pool alone, a burst of new clients let the first loop to run take the
/// whole cap, and the other loop, holding no flow it could evict, dropped every datagram (seen in
/// the test of this). Why a pool: fixed shares alone would evict on a loop while another has room,
/// as SO_REUSEPORT's hash never spreads clients exactly evenly.
///
/// One compare-and-swap per flow opened beyond the reserve, one add per such flow closed;
/// nothing per datagram.
public final class UDPFlowBudget: Sendable {
    public let limit: Int
    /// Flows each loop may hold without the pool: a quarter of an even share, at least one when
    /// the limit allows one per loop.
    package let reserve: Int
    /// What the loops share: the limit less every loop's reserve.
    package let pool: Int
    /// The loops serving the mapping.
    package let loops: Int
    private let used = Atomic<Int>(0)

    package init(limit: Int, loops: Int = 1) {
        let limit = max(1, limit)
        let loops = max(1, loops)
        self.limit = limit
        self.loops = loops
        reserve = limit < loops ? 0 : max(1, limit / (4 * loops))
        pool = limit - reserve * loops
    }

    /// The most flows one loop can hold: its reserve and the whole pool.
    package var perLoop: Int { max(1, reserve + pool) }

    /// Answered flows (`--udp-max-answered`) one loop keeps: its share of `answered` for the
    /// mapping, rounded up; nil `answered`: a quarter of the limit, rounded up. The loops' tables
    /// are apart, and SO_REUSEPORT spreads one-shot clients about evenly over them.
    public func answeredPerLoop(_ answered: Int?) -> Int {
        let total = max(0, answered ?? (limit + 3) / 4)
        return min(perLoop, (total + loops - 1) / loops)
    }

    /// Units of the pool taken now.
    package var pooled: Int { used.load(ordering: .relaxed) }

    /// A unit of the pool for a flow beyond a loop's reserve, if one is left.
    func take() -> Bool {
        var current = used.load(ordering: .relaxed)
        while current < pool {
            let (exchanged, original) = used.compareExchange(
                expected: current,
                desired: current + 1,
                ordering: .relaxed
            )
            if exchanged { return true }
            current = original
        }
        return false
    }

    func give() { used.subtract(1, ordering: .relaxed) }
}
