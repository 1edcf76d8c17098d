// What the Publisher tests share: mappings towards the loopback backends, a publisher run on a thread.

import LinuxIO
import Mappings
import Publishing
import XCTest

/// Docker `-p` specs towards 127.0.0.1, where the test backends listen.
func loopbackMappings(_ specs: [String]) throws -> [PortMapping] {
    let ip = try XCTUnwrap(IPAddress("127.0.0.1"))
    return try specs.flatMap { try PortSpec(parsing: $0).mappings(to: ip) }
}

/// Runs `publisher` on a thread; the returned closure stops it and waits.
func runInBackground(_ publisher: Publisher) throws -> () -> Void {
    let handover = Handover(publisher)
    let thread = try LoopThread(name: "publisher") { try? handover.value.run(signals: []) }
    return {
        publisher.stop()
        thread.join()
    }
}
