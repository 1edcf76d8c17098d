// `GET /metrics` without stalling the API: the text is rendered on a thread of its own (a
// scrape waits up to a second for the loops, and 10,000 ports render to megabytes), at most
// once per interval, and every scraper that asks meanwhile gets the same bytes. So a scrape
// costs what one rendering costs, however many scrapers there are, and the control thread only
// hands out references to the shared body.

import LinuxIO
import Synchronization

/// The last rendering and who waits for the next; on the control thread only.
final class MetricsCache {
    private let interval: Duration
    private var body: [UInt8] = []
    private var renderedAt: Instant?
    private var rendering = false
    private var waiting: [([UInt8]) -> Void] = []
    /// Renderings asked for so far (`berth_metrics_renders_total`).
    private(set) var renders = 0

    init(interval: Duration) { self.interval = interval }

    /// Delivers a body no older than the interval: now, from the cache, or when the rendering
    /// under way (or one this call asks for: then it answers true, and the caller starts it)
    /// is done.
    func request(now: Instant, deliver: @escaping ([UInt8]) -> Void) -> Bool {
        if let renderedAt, now < renderedAt + interval {
            deliver(body)
            return false
        }
        waiting.append(deliver)
        guard !rendering else { return false }
        rendering = true
        renders += 1
        return true
    }

    /// A rendering is done: every waiting scraper gets it, later ones until the interval passes.
    func rendered(_ text: [UInt8], now: Instant) {
        body = text
        renderedAt = now
        rendering = false
        let delivered = waiting
        waiting = []
        for deliver in delivered { deliver(text) }
    }
}

/// The thread that renders: woken by `render()`, it makes the body and hands it to the cache on
/// the control loop's thread (posted work), so the cache is never touched from two threads.
final class MetricsRenderer: @unchecked Sendable {
    private let wake = Semaphore()
    private let thread: LoopThread
    private let stopping = Flag()

    init(
        render: @escaping @Sendable () -> [UInt8],
        loop: EventLoop,
        cache: MetricsCache
    ) throws(SyscallError) {
        let wake = self.wake
        let stopping = self.stopping
        let target = Handover((loop: loop, cache: cache))
        let waker = loop.waker
        thread = try LoopThread(name: "berth-metrics") {
            while true {
                wake.wait()
                if stopping.isSet { return }
                let text = render()
                waker.post {
                    target.value.cache.rendered(text, now: target.value.loop.now)
                }
            }
        }
    }

    /// Asks for one rendering (the cache asks once per interval at most).
    func render() { wake.signal() }

    /// Ends the thread once the rendering under way (if any) is done; more calls do nothing.
    func stop() {
        guard !stopping.set() else { return }
        wake.signal()
        thread.join()
    }
}

/// The renderer's stop flag, shared with its thread.
private final class Flag: Sendable {
    private let value = Atomic<Bool>(false)
    /// Sets it; true if it was set already.
    func set() -> Bool { value.exchange(true, ordering: .acquiringAndReleasing) }
    var isSet: Bool { value.load(ordering: .acquiring) }
}
