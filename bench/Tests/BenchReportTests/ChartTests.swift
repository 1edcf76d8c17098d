import BenchReport
import Foundation
import Testing

struct ChartTests {
    /// Two figures of one group, four targets with values, one that failed and one that cannot.
    static let document = BenchDocument(
        environment: BenchEnvironment(
            date: "2026-12-07T01:00:00Z",
            nproc: 2,
            cpu: "AMD EPYC",
            kernel: "6.18",
            memory: "24 GiB",
            versions: [:],
            duration: 2,
            repetitions: 3,
            command: ""
        ),
        targets: ["direct", "berth", "docker-proxy", "my<proxy>&", "haproxy", "nginx"],
        scenarios: [
            BenchScenario(
                name: "loopback",
                figures: [
                    BenchFigure(
                        id: "tcp-bulk-1",
                        group: "tcp-bulk",
                        title: "TCP bulk, 1 stream",
                        unit: "Gbit/s",
                        higherIsBetter: true,
                        ratioTo: "direct",
                        targets: [
                            "direct": BenchCell(values: [28, 30, 29])!,
                            "berth": BenchCell(values: [15, 16, 14.5])!,
                            "docker-proxy": BenchCell(values: [10, 11, 10.5])!,
                            "my<proxy>&": BenchCell(values: [3, 4, 5])!,
                            "haproxy": BenchCell(note: "haproxy exited: bind failed", unsupported: false),
                            "nginx": BenchCell(note: "not installed", unsupported: true),
                        ]
                    ),
                    BenchFigure(
                        id: "tcp-bulk-8",
                        group: "tcp-bulk",
                        title: "TCP bulk, 8 streams & more <yes>",
                        unit: "Gbit/s",
                        higherIsBetter: true,
                        ratioTo: "direct",
                        targets: [
                            "direct": BenchCell(values: [29])!,
                            "berth": BenchCell(values: [22])!,
                            "docker-proxy": BenchCell(values: [17])!,
                            "my<proxy>&": BenchCell(values: [8])!,
                        ]
                    ),
                ]
            )
        ]
    )

    /// python3 (one of the Makefile's packages) parses the SVG as XML and prints, per bar, its
    /// target and width; it fails on anything that is not well-formed.
    func parse(_ svg: String) throws -> (status: Int32, output: String) {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("berth-chart-\(UUID().uuidString).svg")
        try svg.write(to: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: file) }
        let script = """
            import sys, xml.etree.ElementTree as E
            root = E.parse(sys.argv[1]).getroot()
            assert root.tag == '{http://www.w3.org/2000/svg}svg', root.tag
            for e in root.iter('{http://www.w3.org/2000/svg}rect'):
                if e.get('class') == 'bar':
                    print(e.get('data-target'), e.get('width'), e.get('fill'))
            """
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["python3", "-c", script, file.path]
        let out = Pipe()
        p.standardOutput = out
        p.standardError = out
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    @Test func oneWellFormedChartPerGroupWithABarPerTarget() throws {
        let charts = Chart.render(ChartTests.document)
        #expect(charts.map(\.group) == ["tcp-bulk"])
        let (status, output) = try parse(charts[0].svg)
        #expect(status == 0, "\(output)")
        let bars = output.split(separator: "\n").map { $0.split(separator: " ").map(String.init) }
        // Four targets with values in each of the two figures, in the run's target order.
        #expect(
            bars.map { $0[0] } == ["direct", "berth", "docker-proxy", "my<proxy>&"] + [
                "direct", "berth", "docker-proxy", "my<proxy>&",
            ]
        )
        // A bar's length is its ratio to direct: berth's is 15 / 29 of direct's.
        let width = bars.map { Double($0[1])! }
        #expect(abs(width[1] / width[0] - 15.0 / 29) < 0.01)
        // berth stands out; every peer shares one colour.
        #expect(bars[1][2] != bars[2][2])
        #expect(bars[2][2] == bars[3][2])
        // The failure is shown with its reason; what a target cannot do is left out.
        #expect(charts[0].svg.contains("n/a: haproxy exited: bind failed"))
        #expect(!charts[0].svg.contains("not installed"))
        #expect(charts[0].svg.contains("TCP bulk, 8 streams &amp; more &lt;yes&gt;"))
    }

    @Test func withoutTheBaseTheBarsAreValues() throws {
        var doc = ChartTests.document
        doc.scenarios[0].figures[0].targets["direct"] = nil
        let svg = Chart.render(doc)[0].svg
        #expect(svg.contains("TCP bulk, 1 stream: values (no direct value to divide by), higher is better"))
        #expect(svg.contains("TCP bulk, 8 streams &amp; more &lt;yes&gt;: ratio to direct, higher is better"))
        #expect(try parse(svg).status == 0)
    }
}
