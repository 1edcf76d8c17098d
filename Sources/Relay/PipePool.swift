import Glibc
import LinuxIO

/// Empty pipes ready for reuse. A connection takes a pipe only while bytes are in flight
/// and gives it back empty, so idle connections hold none. A pipe with bytes in it is
/// never given back: the connection closes it instead (its `Pipe` owns the descriptors).
final class PipePool {
    private var free: [(read: Int32, write: Int32)] = []
    private let size: Int
    private let limit: Int
    private(set) var capacity: Int = 0
    private(set) var created: UInt64 = 0

    init(size: Int, limit: Int) {
        self.size = size
        self.limit = limit
        free.reserveCapacity(limit)
    }

    deinit {
        for p in free {
            close(p.read)
            close(p.write)
        }
    }

    func take() throws(SyscallError) -> Pipe {
        if let p = free.popLast() {
            return Pipe(adoptingRead: p.read, write: p.write, capacity: capacity)
        }
        let pipe = try Pipe(size: size)
        capacity = pipe.capacity
        created &+= 1
        return pipe
    }

    /// Takes back an empty pipe; closes it when the pool is full.
    func give(_ pipe: consuming Pipe) {
        guard free.count < limit, pipe.capacity == capacity else { return }
        free.append(pipe.release())
    }

    var idle: Int { free.count }
}
