import Glibc

/// A file descriptor with exactly one owner. It closes itself when it goes out of scope,
/// so a leak or a double close is a compile-time matter. `close` is never retried:
/// on Linux the descriptor is gone even when close reports EINTR.
package struct Descriptor: ~Copyable, Sendable {
    /// The number, for LinuxIO's calls and for log lines. Package access, and no call outside
    /// LinuxIO takes it: a copy of it is not an owner (`make lint` checks that nothing lends it).
    package let raw: Int32

    /// Takes ownership of `raw`.
    package init(taking raw: Int32) {
        precondition(raw >= 0, "negative descriptor")
        self.raw = raw
    }

    deinit { closeDescriptor(raw) }

    /// Hands the number to someone else, who now must close it.
    package consuming func release() -> Int32 {
        let raw = self.raw
        discard self
        return raw
    }

    /// Closes now. Same as dropping it, but reads better where the moment matters.
    package consuming func close() {}

    /// Not an owner: a number someone else closes, viewed as a `Descriptor` for the length of
    /// `body` and never closed here. Only for the transitional raw-number calls (RawCalls.swift).
    private init(lent raw: Int32) { self.raw = raw }

    private consuming func forget() { discard self }

    @inline(__always)
    package static func lending<R, E: Error>(_ raw: Int32, _ body: (borrowing Descriptor) throws(E) -> R) throws(E) -> R
    {
        let lent = Descriptor(lent: raw)
        let result: Result<R, E>
        do throws(E) { result = .success(try body(lent)) } catch { result = .failure(error) }
        lent.forget()
        return try result.get()
    }
}

/// The one close(2) of berth. EBADF means the number was closed already (or never ours):
/// a second owner somewhere, which would close a stranger's descriptor next time. That is
/// berth's bug, and it traps rather than go on.
@inline(__always)
func closeDescriptor(_ raw: Int32) {
    if Glibc.close(raw) != 0 && errno == EBADF {
        fatalError("close fd \(raw): bad file descriptor: closed twice, a bug in berth")
    }
}

/// Descriptors owned as a group, in first-in first-out order: a pool's spare pipes, clients
/// waiting for a descriptor of their own. Taking one out hands over its ownership; whatever
/// is left is closed with the list. Grows by doubling, so pushing allocates only when it grows.
package struct DescriptorQueue: ~Copyable {
    private var storage: UnsafeMutableBufferPointer<Int32>
    private var head = 0
    package private(set) var count = 0

    package init(capacity: Int = 8) {
        storage = .allocate(capacity: max(1, capacity))
    }

    deinit {
        for i in 0..<count { closeDescriptor(storage[(head + i) % storage.count]) }
        storage.deallocate()
    }

    package var isEmpty: Bool { count == 0 }

    package mutating func append(_ descriptor: consuming Descriptor) {
        if count == storage.count { grow() }
        storage[(head + count) % storage.count] = descriptor.release()
        count += 1
    }

    /// Puts one back in front of the others (the oldest goes first again).
    package mutating func prepend(_ descriptor: consuming Descriptor) {
        if count == storage.count { grow() }
        head = (head + storage.count - 1) % storage.count
        storage[head] = descriptor.release()
        count += 1
    }

    package mutating func popFirst() -> Descriptor? {
        guard count > 0 else { return nil }
        let raw = storage[head]
        head = (head + 1) % storage.count
        count -= 1
        return Descriptor(taking: raw)
    }

    package mutating func popLast() -> Descriptor? {
        guard count > 0 else { return nil }
        count -= 1
        return Descriptor(taking: storage[(head + count) % storage.count])
    }

    /// The number of the oldest, still owned here.
    package var first: Int32? { count > 0 ? storage[head] : nil }

    private mutating func grow() {
        let bigger = UnsafeMutableBufferPointer<Int32>.allocate(capacity: storage.count * 2)
        for i in 0..<count { bigger[i] = storage[(head + i) % storage.count] }
        storage.deallocate()
        storage = bigger
        head = 0
    }
}

/// Descriptors owned by slot number, for tables whose entries come and go (UDP flows): a slot
/// holds at most one, taking it out hands it over, and what is left closes with the table.
package struct DescriptorSlots: ~Copyable {
    private let storage: UnsafeMutableBufferPointer<Int32>

    package init(capacity: Int) {
        storage = .allocate(capacity: max(1, capacity))
        storage.initialize(repeating: -1)
    }

    deinit {
        for raw in storage where raw >= 0 { closeDescriptor(raw) }
        storage.deallocate()
    }

    /// `body` with the descriptor in `slot`, which stays owned here; nil (and `body` not run)
    /// when the slot is empty.
    @inline(__always)
    package func with<R, E: Error>(_ slot: Int, _ body: (borrowing Descriptor) throws(E) -> R) throws(E) -> R? {
        let raw = storage[slot]
        guard raw >= 0 else { return nil }
        return try Descriptor.lending(raw, body)
    }

    /// Takes ownership of `descriptor` in `slot`. False if the slot holds one already (a table
    /// that lost track of its slots): then `descriptor` is closed and the slot keeps its own.
    package func put(_ descriptor: consuming Descriptor, at slot: Int) -> Bool {
        guard storage[slot] < 0 else { return false }
        storage[slot] = descriptor.release()
        return true
    }

    package func take(_ slot: Int) -> Descriptor? {
        let raw = storage[slot]
        guard raw >= 0 else { return nil }
        storage[slot] = -1
        return Descriptor(taking: raw)
    }
}
