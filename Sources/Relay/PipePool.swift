import Glibc
import LinuxIO

/// Empty pipes ready for reuse. A connection takes a pipe only while bytes are in flight
/// and gives it back empty, so idle connections hold none. A pipe with bytes in it is
/// never given back: the connection closes it instead (its `Pipe` owns the descriptors).
/// The pool owns its spare pipes' descriptors (two queues in step) and closes them with it.
final class PipePool {
    private var reads: DescriptorQueue
    private var writes: DescriptorQueue
    private let size: Int
    private let limit: Int
    private(set) var capacity: Int = 0
    private(set) var created: UInt64 = 0

    init(size: Int, limit: Int) {
        self.size = size
        self.limit = limit
        reads = DescriptorQueue(capacity: limit)
        writes = DescriptorQueue(capacity: limit)
    }

    func take() throws(SyscallError) -> Pipe {
        if let read = reads.popLast(), let write = writes.popLast() {
            return Pipe(read: read, write: write, capacity: capacity)
        }
        let pipe = try Pipe(size: size)
        capacity = pipe.capacity
        created &+= 1
        return pipe
    }

    /// Takes back an empty pipe, also one made by another loop's pool that came with a connection
    /// (an empty pool takes its size); closes it when the pool is full.
    func give(_ pipe: consuming Pipe) {
        if reads.count == 0 { capacity = pipe.capacity }
        guard reads.count < limit, pipe.capacity == capacity else { return }
        pipe.store(reads: &reads, writes: &writes)
    }

    var idle: Int { reads.count }

    /// What one stream may move per wake-up: a pipe's worth as the kernel granted it
    /// (F_SETPIPE_SZ rounds up to pages, or keeps 64 KiB when refused); until the pool made its
    /// first pipe, the size asked for.
    var budget: Int { capacity > 0 ? capacity : size }
}
