import Glibc
import LinuxIO
import Logging
import SystemPackage

/// Accepts clients on one listener for one loop and starts a `TCPConnection` for each.
/// Level-triggered and exclusive: several loops may serve one listener, one is woken.
/// On EMFILE/ENFILE it stops watching the listener for `descriptorPause`, logs once per
/// episode, and tries again: pending clients wait in the backlog, the CPU does not spin.
public final class TCPAcceptor: EventHandler {
    let listener: Listener
    let target: SocketAddress
    let context: RelayContext
    private var id: HandlerID?
    private var paused = false
    /// Out of descriptors since the last successful connection: log only the first pause.
    private var exhausted = false

    public init(listener: Listener, target: SocketAddress, context: RelayContext) {
        self.listener = listener
        self.target = target
        self.context = context
    }

    public func start() throws(SyscallError) {
        let id = context.loop.attach(self)
        self.id = id
        try context.loop.add(listener.fd, [.read, .exclusive], for: id, tag: 0)
    }

    /// Stops accepting; established connections go on.
    public func stop() {
        guard let id else { return }
        if !paused { context.loop.remove(listener.fd) }
        context.loop.detach(id)
        self.id = nil
    }

    public func ready(_ readiness: Readiness, tag: UInt8, loop: EventLoop) {
        for _ in 0..<context.config.acceptBatch {
            let client: Int32
            do {
                guard let fd = try Socket.accept(listener.fd) else { return }
                client = fd
            } catch {
                switch error.errno {
                case .tooManyOpenFiles, .tooManyOpenFilesInSystem, .noBufferSpace, .noMemory:
                    pause(error)
                    return
                default:
                    // ECONNABORTED, EPROTO, ...: that client is gone; the next may be fine.
                    continue
                }
            }
            context.counters.accepted &+= 1
            switch TCPConnection.start(client: Descriptor(taking: client), target: target, context: context) {
            case .started:
                if exhausted {
                    exhausted = false
                    context.logger.notice("\(listener.address): accepting again")
                }
            case .outOfDescriptors(let error): pause(error)
            }
        }
    }

    private func pause(_ error: SyscallError) {
        guard let id, !paused else { return }
        paused = true
        context.counters.acceptPauses &+= 1
        context.loop.remove(listener.fd)
        context.loop.schedule(at: context.loop.now + context.config.descriptorPause, for: id, tag: 0)
        if exhausted { return }
        exhausted = true
        context.logger.warning(
            "\(listener.address): \(error); pausing accept for \(context.config.descriptorPause) (raise the open files limit, ulimit -n)")
    }

    public func timer(tag: UInt8, loop: EventLoop) {
        guard let id, paused else { return }
        paused = false
        do {
            try loop.add(listener.fd, [.read, .exclusive], for: id, tag: 0)
        } catch {
            context.logger.error("\(listener.address): cannot watch the listener again: \(error)")
            return
        }
        // Level-triggered: if clients wait, the next wait reports it at once.
    }
}
