// A scrape of a running Publisher (`metrics()`): per-mapping counters summed over the loops,
// exact to the byte, and their Prometheus text exposition.

import Glibc
import LinuxIO
import Mappings
import Relay
import TestSupport
import XCTest

@testable import Publishing

final class PublisherMetricsTests: XCTestCase {

    /// A connection that moved to the bulk loop (`bulkAfter` 1: at its first byte; an hour's
    /// window: it stays there) counts there, and a scrape adds that to its mapping's counters:
    /// every byte both ways, one connection active and bulk, one move, in the exposition too.
    func testAConnectionOnTheBulkLoopCountsInItsMapping() throws {
        let echo = try TestServer.echo()
        var options = PublishOptions()
        options.threads = 2
        options.bulkLoops = 1
        options.relay.bulkAfter = 1
        options.relay.bulkWindow = .seconds(3600)
        let publisher = Publisher(options: options)
        let web = try publisher.add(try loopbackMappings(["127.0.0.1::\(echo.address.port)"]))
        let stop = try runInBackground(publisher)
        defer { stop() }
        let c = try TestSocket.connect(web.ports[0].address)
        for size in [1, 1000, 100_000] {
            let bytes = pattern(size, seed: UInt64(size))
            try c.send(bytes)
            XCTAssertEqual(try c.receive(exactly: size), bytes)
        }
        let m = publisher.metrics()
        XCTAssertEqual(m.loops, 3, "two loops and the bulk loop")
        XCTAssertEqual(m.loopsAnswered, 3)
        XCTAssertEqual(m.mappings.count, 1)
        let counters = try XCTUnwrap(m.mappings.first?.counters)
        XCTAssertEqual(counters.bytesToBackend, 101_001)
        XCTAssertEqual(counters.bytesToClient, 101_001)
        XCTAssertEqual(counters.accepted, 1)
        XCTAssertEqual(counters.active, 1)
        XCTAssertEqual(counters.bulk, 1)
        XCTAssertEqual(counters.moves, 1)
        let lines = m.prometheusText().split(separator: "\n")
        XCTAssertTrue(lines.contains { $0.hasPrefix("berth_tcp_connections_bulk{") && $0.hasSuffix("} 1") })
        XCTAssertTrue(lines.contains { $0.hasPrefix("berth_tcp_moves_total{") && $0.hasSuffix("} 1") })
        c.close()
    }

    /// Two TCP mappings and a UDP one on a publisher with 2 loops: 12,345 bytes through one TCP
    /// port (over several connections, so both loops may serve it), 777 through the other,
    /// datagrams through the UDP one; each mapping's counters say exactly that, the
    /// exposition has exactly those sample lines, and a removed publication is gone.
    func testAScrapeCountsEachMappingExactly() throws {
        let echoA = try TestServer.echo()
        let echoB = try TestServer.echo()
        let udpEcho = try TestUDPEchoServer()
        var options = PublishOptions()
        options.threads = 2
        let publisher = Publisher(options: options)
        let web = try publisher.add(try loopbackMappings(["127.0.0.1::\(echoA.address.port)"]), owner: "web \"1\"")
        let api = try publisher.add(try loopbackMappings(["127.0.0.1::\(echoB.address.port)"]))
        let dns = try publisher.add(try loopbackMappings(["127.0.0.1::\(udpEcho.address.port)/udp"]), owner: "dns")
        let stop = try runInBackground(publisher)
        defer { stop() }

        // 12,345 bytes over 5 connections to web, the last one left open.
        let chunks = [5000, 4000, 2000, 1000, 345]
        var open: TestSocket?
        for (i, size) in chunks.enumerated() {
            let c = try TestSocket.connect(web.ports[0].address)
            let bytes = pattern(size, seed: UInt64(i))
            try c.send(bytes)
            XCTAssertEqual(try c.receive(exactly: size), bytes)
            if i == chunks.count - 1 { open = c } else { c.close() }
        }
        let c = try TestSocket.connect(api.ports[0].address)
        try c.send(pattern(777, seed: 9))
        XCTAssertEqual(try c.receive(exactly: 777).count, 777)
        c.close()
        // 3 datagrams of 100, 200, 300 bytes from one client, one of 50 from another.
        let d1 = try TestUDPSocket()
        for size in [100, 200, 300] {
            try d1.send(pattern(size, seed: 1), to: dns.ports[0].address)
            XCTAssertEqual(try d1.receive().count, size)
        }
        let d2 = try TestUDPSocket()
        try d2.send(pattern(50, seed: 2), to: dns.ports[0].address)
        XCTAssertEqual(try d2.receive().count, 50)

        // The closed connections' ends reach berth a moment later.
        var m = publisher.metrics()
        XCTAssertTrue(
            eventually {
                m = publisher.metrics()
                return m.mappings.contains { $0.publication == web.id && $0.counters.active == 1 }
                    && m.mappings.contains { $0.publication == api.id && $0.counters.active == 0 }
            },
            "\(m.mappings.map(\.counters.active))"
        )
        XCTAssertEqual(m.loops, 2)
        XCTAssertEqual(m.loopsAnswered, 2)
        XCTAssertEqual(m.mappings.count, 3, "\(m.mappings.map(\.host))")
        let w = try XCTUnwrap(m.mappings.first { $0.publication == web.id })
        XCTAssertEqual(w.proto, .tcp)
        XCTAssertEqual(w.host, web.ports[0].address)
        XCTAssertEqual(w.target, echoA.address)
        XCTAssertEqual(w.owner, "web \"1\"")
        XCTAssertEqual(w.counters.accepted, 5)
        XCTAssertEqual(w.counters.active, 1)
        XCTAssertEqual(w.counters.bytesToBackend, 12_345)
        XCTAssertEqual(w.counters.bytesToClient, 12_345)
        XCTAssertEqual(w.counters.refused, 0)
        let a = try XCTUnwrap(m.mappings.first { $0.publication == api.id })
        XCTAssertNil(a.owner)
        XCTAssertEqual(a.counters.accepted, 1)
        XCTAssertEqual(a.counters.bytesToBackend, 777)
        XCTAssertEqual(a.counters.bytesToClient, 777)
        let u = try XCTUnwrap(m.mappings.first { $0.publication == dns.id })
        XCTAssertEqual(u.proto, .udp)
        XCTAssertEqual(u.counters.flowsCreated, 2)
        XCTAssertEqual(u.counters.flowsActive, 2)
        XCTAssertEqual(u.counters.datagramsToBackend, 4)
        XCTAssertEqual(u.counters.datagramsToClient, 4)
        XCTAssertEqual(u.counters.bytesToBackend, 650)
        XCTAssertEqual(u.counters.bytesToClient, 650)
        XCTAssertEqual(u.counters.truncated, 0)
        XCTAssertEqual(u.counters.dropped, 0)
        XCTAssertEqual(u.counters.accepted, 0)
        XCTAssertNotNil(m.openDescriptors)
        XCTAssertGreaterThan(m.descriptorLimit ?? 0, 0)

        let text = m.prometheusText()
        let samples = try parse(text)
        let webLabels =
            "proto=\"tcp\",host_address=\"127.0.0.1\",host_port=\"\(web.ports[0].address.port)\",target=\"127.0.0.1:\(echoA.address.port)\",owner=\"web \\\"1\\\"\""
        let apiLabels =
            "proto=\"tcp\",host_address=\"127.0.0.1\",host_port=\"\(api.ports[0].address.port)\",target=\"127.0.0.1:\(echoB.address.port)\""
        let dnsLabels =
            "proto=\"udp\",host_address=\"127.0.0.1\",host_port=\"\(dns.ports[0].address.port)\",target=\"127.0.0.1:\(udpEcho.address.port)\",owner=\"dns\""
        let lines = Set(text.split(separator: "\n").map(String.init))
        for expected in [
            "berth_loops 2",
            "berth_tcp_bytes_total{\(webLabels),direction=\"to_backend\"} 12345",
            "berth_tcp_bytes_total{\(webLabels),direction=\"to_client\"} 12345",
            "berth_tcp_bytes_total{\(apiLabels),direction=\"to_backend\"} 777",
            "berth_tcp_bytes_total{\(apiLabels),direction=\"to_client\"} 777",
            "berth_tcp_connections_accepted_total{\(webLabels)} 5",
            "berth_tcp_connections_accepted_total{\(apiLabels)} 1",
            "berth_tcp_connections_active{\(webLabels)} 1",
            "berth_udp_bytes_total{\(dnsLabels),direction=\"to_backend\"} 650",
            "berth_udp_datagrams_total{\(dnsLabels),direction=\"to_client\"} 4",
            "berth_udp_flows_created_total{\(dnsLabels)} 2",
            "berth_udp_flows_active{\(dnsLabels)} 2",
            "# TYPE berth_tcp_bytes_total counter",
            "# TYPE berth_udp_flows_active gauge",
        ] {
            XCTAssertTrue(lines.contains(expected), "missing: \(expected)\n\(text)")
        }
        // The parsed samples agree (labels unescaped).
        let webBytes = samples.first {
            $0.name == "berth_tcp_bytes_total" && $0.labels["owner"] == "web \"1\""
                && $0.labels["direction"] == "to_client"
        }
        XCTAssertEqual(webBytes?.value, 12_345)
        XCTAssertFalse(
            samples.contains { $0.name.hasPrefix("berth_udp") && $0.labels["proto"] == "tcp" },
            "UDP metrics on a TCP port"
        )

        // Removed: gone from the next scrape, even with a connection still draining.
        try publisher.remove(web.id, drain: .seconds(5))
        m = publisher.metrics()
        XCTAssertEqual(m.mappings.map(\.publication), [api.id, dns.id])
        XCTAssertFalse(m.prometheusText().contains("web"))
        open?.close()
        d1.close()
        d2.close()
    }

    /// A stream that moves more than a small message at a time splices through a pipe, which its
    /// loop's pool makes once: `berth_pipes_created_total`, a counter beside the pipes pooled.
    /// Small request/response exchanges after it make none: they copy, or reuse the pooled pipe.
    func testPipesMadeShowInTheScrape() throws {
        let echo = try TestServer.echo()
        var options = PublishOptions()
        options.threads = 1
        options.bulkLoops = 0
        let publisher = Publisher(options: options)
        let web = try publisher.add(try loopbackMappings(["127.0.0.1::\(echo.address.port)"]))
        let stop = try runInBackground(publisher)
        defer { stop() }
        XCTAssertEqual(publisher.metrics().pipesCreated, 0, "none before a byte moved")
        let c = try TestSocket.connect(web.ports[0].address)
        let bulk = pattern(256 << 10, seed: 3)
        try c.send(bulk)
        XCTAssertEqual(try c.receive(exactly: bulk.count), bulk)
        let made = publisher.metrics().pipesCreated
        XCTAssertGreaterThanOrEqual(made, 1, "the stream spliced")
        for i in 0..<50 {
            try c.send("ping \(i)")
            XCTAssertEqual(String(decoding: try c.receive(exactly: "ping \(i)".utf8.count), as: UTF8.self), "ping \(i)")
        }
        let m = publisher.metrics()
        XCTAssertEqual(m.pipesCreated, made, "small exchanges made no pipe")
        let lines = Set(m.prometheusText().split(separator: "\n").map(String.init))
        XCTAssertTrue(lines.contains("# TYPE berth_pipes_created_total counter"))
        XCTAssertTrue(lines.contains("berth_pipes_created_total \(made)"), m.prometheusText())
        c.close()
    }

    /// Not running: no loops, no mappings, and the scrape does not wait.
    func testAScrapeBeforeRunIsEmpty() throws {
        let publisher = Publisher()
        _ = try publisher.add(try loopbackMappings(["127.0.0.1::80"]))
        let m = publisher.metrics(timeout: .seconds(30))
        XCTAssertEqual(m.loops, 0)
        XCTAssertTrue(m.mappings.isEmpty)
        XCTAssertNoThrow(try parse(m.prometheusText()))
    }

    func testLabelValuesAndHelpAreEscaped() {
        XCTAssertEqual(Exposition.escapeLabel(#"plain"#), "plain")
        XCTAssertEqual(Exposition.escapeLabel("a\\b\"c\nd"), #"a\\b\"c\nd"#)
        XCTAssertEqual(Exposition.escapeLabel("ü ✓"), "ü ✓")
        XCTAssertEqual(Exposition.escapeHelp("a\\b\"c\nd"), #"a\\b"c\nd"#)
        var out = Exposition()
        out.header("berth_x_total", .counter, "X.")
        out.sample("berth_x_total", [("owner", "o\"k\\\n")], 3)
        out.sample("berth_x_total", [], 18_446_744_073_709)
        XCTAssertEqual(
            out.text,
            "# HELP berth_x_total X.\n# TYPE berth_x_total counter\nberth_x_total{owner=\"o\\\"k\\\\\\n\"} 3\nberth_x_total 18446744073709\n"
        )
        XCTAssertEqual(try parse(out.text).first?.labels["owner"], "o\"k\\\n")
    }

    // MARK: a strict reader of the text format

    struct Sample {
        var name: String
        var labels: [String: String]
        var value: Double
    }

    /// Every line is `# HELP name text`, `# TYPE name counter|gauge` (once per name, before its
    /// samples) or `name{label="value",...} value`; anything else fails.
    private func parse(_ text: String) throws -> [Sample] {
        guard text.hasSuffix("\n") else { throw TestFailure("no final line feed") }
        var samples: [Sample] = []
        var typed: [String: String] = [:]
        var helped: Set<String> = []
        func isName(_ s: Substring) -> Bool {
            guard let first = s.first, first.isLetter || first == "_" else { return false }
            return s.allSatisfy { ($0.isASCII && ($0.isLetter || $0.isNumber)) || $0 == "_" }
        }
        for line in text.split(separator: "\n", omittingEmptySubsequences: false).dropLast() {
            if line.hasPrefix("# HELP ") {
                let rest = line.dropFirst(7)
                let name = rest.prefix { $0 != " " }
                guard isName(name), helped.insert(String(name)).inserted else { throw TestFailure("bad HELP: \(line)") }
                continue
            }
            if line.hasPrefix("# TYPE ") {
                let parts = line.dropFirst(7).split(separator: " ")
                guard parts.count == 2, isName(parts[0]), ["counter", "gauge"].contains(parts[1]),
                    typed.updateValue(String(parts[1]), forKey: String(parts[0])) == nil
                else { throw TestFailure("bad TYPE: \(line)") }
                if parts[1] == "counter" && !parts[0].hasSuffix("_total") {
                    throw TestFailure("counter without _total: \(line)")
                }
                continue
            }
            var rest = line[...]
            let name = rest.prefix { $0 != "{" && $0 != " " }
            guard isName(name), name.hasPrefix("berth_"), typed[String(name)] != nil else {
                throw TestFailure("bad sample name: \(line)")
            }
            rest = rest.dropFirst(name.count)
            var labels: [String: String] = [:]
            if rest.first == "{" {
                rest = rest.dropFirst()
                while rest.first != "}" {
                    let key = rest.prefix { $0 != "=" }
                    guard isName(key) else { throw TestFailure("bad label name: \(line)") }
                    rest = rest.dropFirst(key.count)
                    guard rest.hasPrefix("=\"") else { throw TestFailure("bad label: \(line)") }
                    rest = rest.dropFirst(2)
                    var value = ""
                    while true {
                        guard let c = rest.popFirst() else { throw TestFailure("open label value: \(line)") }
                        if c == "\"" { break }
                        if c == "\\" {
                            switch rest.popFirst() {
                            case "\\": value.append("\\")
                            case "\"": value.append("\"")
                            case "n": value.append("\n")
                            default: throw TestFailure("bad escape: \(line)")
                            }
                        } else {
                            value.append(c)
                        }
                    }
                    guard labels.updateValue(value, forKey: String(key)) == nil else {
                        throw TestFailure("label twice: \(line)")
                    }
                    if rest.first == "," {
                        rest = rest.dropFirst()
                    } else if rest.first != "}" {
                        throw TestFailure("bad labels: \(line)")
                    }
                }
                rest = rest.dropFirst()
            }
            guard rest.first == " ", let value = Double(rest.dropFirst()) else {
                throw TestFailure("bad value: \(line)")
            }
            samples.append(Sample(name: String(name), labels: labels, value: value))
        }
        return samples
    }
}
