import Glibc

/// A file descriptor with exactly one owner. It closes itself when it goes out of scope,
/// so a leak or a double close is a compile-time matter. `close` is never retried:
/// on Linux the descriptor is gone even when close reports EINTR.
public struct Descriptor: ~Copyable, Sendable {
    public let raw: Int32

    /// Takes ownership of `raw`.
    public init(taking raw: Int32) {
        precondition(raw >= 0, "negative descriptor")
        self.raw = raw
    }

    deinit { Glibc.close(raw) }

    /// Hands the number to someone else, who now must close it.
    public consuming func release() -> Int32 {
        let raw = self.raw
        discard self
        return raw
    }

    /// Closes now. Same as dropping it, but reads better where the moment matters.
    public consuming func close() {}
}

extension Int32 {
    /// The descriptor number as text, for logs and errors.
    var fdText: String { "fd \(self)" }
}
