// NetfilterTests: every scenario runs in NetfilterProbe under `unshare -rn`, a private user and
// network namespace. A network namespace is per thread and XCTest shares its threads, so the
// test process itself never enters one; the host's ruleset is never read or touched.
import Foundation
import Mappings
import XCTest

@testable import Netfilter

final class NetfilterTests: XCTestCase {
    // MARK: - Running the probe

    /// Why namespaced tests cannot run here, or nil when they can. Checked once.
    private static let unavailable: String? = {
        for tool in ["unshare", "nft", "ip", "nsenter"] where which(tool) == nil {
            return "\(tool) is not installed"
        }
        let (status, output) = execute(["unshare", "-rn", "true"], timeout: 10)
        if status != 0 {
            return "unshare -rn is not permitted here (\(output.trimmingCharacters(in: .whitespacesAndNewlines)))"
        }
        let nft = execute(["unshare", "-rn", "nft", "list", "tables"], timeout: 10)
        if nft.status != 0 { return "nft does not work in a user+network namespace (\(nft.output))" }
        return nil
    }()

    private static func which(_ tool: String) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/sbin:/usr/bin:/sbin:/bin"
        for dir in (path + ":/usr/sbin:/sbin").split(separator: ":") {
            let candidate = "\(dir)/\(tool)"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        return nil
    }

    private static func execute(_ arguments: [String], timeout: TimeInterval) -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: which(arguments[0]) ?? arguments[0])
        process.arguments = Array(arguments.dropFirst())
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        do { try process.run() } catch { return (127, "\(arguments[0]): \(error)") }
        let deadline = DispatchTime.now() + timeout
        DispatchQueue.global().asyncAfter(deadline: deadline) { if process.isRunning { process.terminate() } }
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    /// NetfilterProbe sits next to the test bundle in the build directory.
    private static var probePath: String {
        let exe =
            (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        return URL(fileURLWithPath: exe).deletingLastPathComponent().appendingPathComponent("NetfilterProbe").path
    }

    /// Runs one probe scenario in a fresh namespace; fails the test with its output on a failure.
    private func probe(_ arguments: String...) throws -> Probe {
        if let reason = Self.unavailable {
            print("skipping: \(reason)")
            throw XCTSkip(reason)
        }
        guard FileManager.default.isExecutableFile(atPath: Self.probePath) else {
            XCTFail("NetfilterProbe not built at \(Self.probePath)")
            throw XCTSkip("no probe")
        }
        let (status, output) = Self.execute(["unshare", "-rn", Self.probePath] + arguments, timeout: 60)
        XCTAssertEqual(status, 0, "probe \(arguments.joined(separator: " ")) failed:\n\(output)")
        return Probe(output: output)
    }

    struct Probe {
        let output: String
        /// The value of the first `key: value` line.
        subscript(_ key: String) -> String? {
            for line in output.split(separator: "\n") where line.hasPrefix(key + ": ") {
                return String(line.dropFirst(key.count + 2))
            }
            return nil
        }
        /// The lines between `=== name` and the next `===`.
        func section(_ name: String) -> String {
            guard let start = output.range(of: "=== \(name)\n") else { return "" }
            let rest = output[start.upperBound...]
            let end = rest.range(of: "\n===")?.lowerBound ?? rest.endIndex
            return String(rest[..<end])
        }
    }

    // MARK: - Tests

    func testSharedTableOutlivesItsSocketAndRemovesExactlyOneOwnersElements() throws {
        let result = try probe("shared")
        XCTAssertEqual(result["rules-before-create"], "0", result.output)
        XCTAssertEqual(result["owner-flag"], "false", "a shared table must not carry the owner flag:\n\(result.output)")
        XCTAssertEqual(result["comment-a"], "true", result.output)
        XCTAssertEqual(result["round-trip"], "true", result.output)
        XCTAssertEqual(result["clash-errno"], "true", result.output)
        XCTAssertTrue(result["clash"]?.contains("tcp . 8080") == true, result.output)
        XCTAssertEqual(result["after-clash"], "3 false", "a refused batch must leave nothing:\n\(result.output)")
        XCTAssertEqual(result["removed"], "2", result.output)
        XCTAssertEqual(result["left"], "cni/net/b/eth0", result.output)
        XCTAssertEqual(result["hairpins-left"], "0 1", result.output)
        XCTAssertEqual(result["removed-again"], "0", result.output)
        XCTAssertEqual(result["table-after-delete"], "false", result.output)
    }

    func testTableLayoutReadBackByNft() throws {
        let result = try probe("layout")
        let text = result.section("text")
        print(text)
        XCTAssertTrue(text.contains("table inet berth_layout {"), text)
        XCTAssertTrue(text.contains("flags owner"), "the table must carry the owner flag:\n\(text)")

        // Rules, chain by chain, as nft prints them.
        let rules = [
            "dnat ip to ip daddr . meta l4proto . th dport map @dnat4",
            "ip daddr != 127.0.0.0/8 fib daddr type local dnat ip to meta l4proto . th dport map @wild4",
            "dnat ip6 to ip6 daddr . meta l4proto . th dport map @dnat6",
            "ip6 daddr != ::1 fib daddr type local dnat ip6 to meta l4proto . th dport map @wild6",
        ]
        let expectedChains: [String: [String]] = [
            "prerouting": rules,
            "output": rules,
            "postrouting": [
                "ct status dnat ip saddr . ip daddr . meta l4proto . th dport @hairpin4 masquerade",
                "ct status dnat ip6 saddr . ip6 daddr . meta l4proto . th dport @hairpin6 masquerade",
            ],
        ]
        for (chain, expected) in expectedChains {
            XCTAssertEqual(chainRules(text, chain), expected, "chain \(chain)")
        }

        // Chains, maps and elements from `nft -j`.
        let json = try JSONSerialization.jsonObject(with: Data(result.section("json").utf8)) as? [String: Any]
        let objects = try XCTUnwrap(json?["nftables"] as? [[String: Any]])
        var chains: [String: String] = [:]
        var maps: [String: [String: Any]] = [:]
        for object in objects {
            if let chain = object["chain"] as? [String: Any], let name = chain["name"] as? String {
                chains[name] =
                    "\(chain["type"] ?? "") \(chain["hook"] ?? "") \(chain["prio"] ?? "") \(chain["policy"] ?? "")"
            }
            if let map = (object["map"] ?? object["set"]) as? [String: Any], let name = map["name"] as? String {
                maps[name] = map
            }
        }
        XCTAssertEqual(
            chains,
            [
                "prerouting": "nat prerouting -100 accept", "output": "nat output -100 accept",
                "postrouting": "nat postrouting 100 accept",
            ]
        )
        XCTAssertEqual(Set(maps.keys), ["dnat4", "wild4", "dnat6", "wild6", "hairpin4", "hairpin6"])
        let expectedTypes: [String: ([String], String?)] = [
            "dnat4": (["ipv4_addr", "inet_proto", "inet_service"], "ipv4_addr . inet_service"),
            "wild4": (["inet_proto", "inet_service"], "ipv4_addr . inet_service"),
            "dnat6": (["ipv6_addr", "inet_proto", "inet_service"], "ipv6_addr . inet_service"),
            "wild6": (["inet_proto", "inet_service"], "ipv6_addr . inet_service"),
            "hairpin4": (["ipv4_addr", "ipv4_addr", "inet_proto", "inet_service"], nil),
            "hairpin6": (["ipv6_addr", "ipv6_addr", "inet_proto", "inet_service"], nil),
        ]
        for (name, (key, data)) in expectedTypes {
            XCTAssertEqual(maps[name]?["type"] as? [String], key, name)
            XCTAssertEqual(maps[name]?["map"] as? String, data, name)
            XCTAssertEqual((maps[name]?["elem"] as? [Any])?.count, name == "hairpin4" ? 2 : 1, name)
        }
        XCTAssertTrue(text.contains("198.18.0.1 . tcp . 8080 counter packets 0 bytes 0 : 198.18.0.2 . 80"), text)
        XCTAssertTrue(text.contains("udp . 5353 counter packets 0 bytes 0 : 198.18.0.2 . 53"), text)
        XCTAssertTrue(text.contains("fd00:b::1 . tcp . 8080 counter packets 0 bytes 0 : fd00:b::2 . 80"), text)
        XCTAssertTrue(text.contains("tcp . 8081 counter packets 0 bytes 0 : fd00:b::2 . 80"), text)
    }

    /// The rule lines of one chain in `nft list` text.
    private func chainRules(_ text: String, _ chain: String) -> [String] {
        guard let start = text.range(of: "chain \(chain) {") else { return [] }
        let body = text[start.upperBound...].prefix { $0 != "}" }
        return body.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
            .filter { !$0.isEmpty && !$0.hasPrefix("type ") }
    }

    func testOneThenThousandRulesInOneBatch() throws {
        let result = try probe("bulk", "1000")
        print(
            "create \(result["time-create-ms"] ?? "?") ms, add 1: \(result["time-add-1-ms"] ?? "?") ms, "
                + "add 1000: \(result["time-add-1000-ms"] ?? "?") ms, counters: \(result["time-counters-ms"] ?? "?") ms, "
                + "remove 1000: \(result["time-remove-1000-ms"] ?? "?") ms, delete: \(result["time-delete-ms"] ?? "?") ms"
        )
        XCTAssertEqual(result["elements-dnat4"], "901")  // 1 + 900 with a host address
        XCTAssertEqual(result["elements-wild4"], "100")
        XCTAssertEqual(result["elements-hairpin4"], "1001")
        XCTAssertEqual(result["counters"], "1001")
        XCTAssertEqual(result["counters-zero"], "true")
        XCTAssertEqual(result["elements-after-remove"], "1")
        XCTAssertEqual(result["hairpin-after-remove"], "1")
        XCTAssertEqual(result["rules-after-remove"], "1")
        XCTAssertEqual(result["table-after-delete"], "false")
    }

    func testRejectedBatchNamesTheObjectAndLeavesNothing() throws {
        let result = try probe("reject")
        print(result.output)
        XCTAssertEqual(
            result["duplicate-owned"]?.hasPrefix("nftables: add table inet berth_dup: Operation not permitted"),
            true
        )
        XCTAssertEqual(result["tables-after-duplicate"], "1")
        XCTAssertEqual(result["duplicate-foreign"], "nftables: add table inet berth_foreign: File exists")
        XCTAssertEqual(result["foreign-chains"], "false", "a failed create must not leave chains in the other table")
        XCTAssertEqual(result["elements-after-add"], "2")
        XCTAssertEqual(result["conflict"]?.contains("already mapped to 198.18.0.2:80"), true)
        XCTAssertEqual(result["loopback"]?.contains("loopback host addresses stay with the userspace relay"), true)
        XCTAssertEqual(result["after-delete"]?.hasSuffix("the table was deleted"), true)
    }

    func testKilledOwnerLeavesNoTable() throws {
        let result = try probe("owner")
        XCTAssertEqual(result["table-while-alive"], "true")
        XCTAssertEqual(result["holder-status"], "137")  // 128 + SIGKILL
        XCTAssertEqual(result["table-after-kill"], "false")
    }

    func testDNATMovesTrafficAndConntrackCleanupStopsStaleUDPFlows() throws {
        let result = try probe("dnat")
        print(result.output)
        XCTAssertEqual(result["direct"]?.hasPrefix("got 10 from 198.18.1.2:"), true)
        // From another namespace through prerouting: the container sees the real client.
        XCTAssertEqual(result["outside-specific"]?.hasPrefix("got 1000 from 198.18.1.2:"), true)
        XCTAssertEqual(result["outside-wildcard"]?.hasPrefix("got 2000 from 198.18.1.2:"), true)
        // From the host itself through the output chain.
        XCTAssertEqual(result["host-specific"]?.hasPrefix("got 3000 from 198.18.0.1:"), true)
        XCTAssertEqual(result["host-wildcard"]?.hasPrefix("got 4000 from 198.18.1.1:"), true)
        XCTAssertEqual(
            result["host-loopback"],
            "error: connect 127.0.0.1:8081: Connection refused",
            "loopback must not be DNATed"
        )
        // The container through a host address to itself: masqueraded to the host's address.
        XCTAssertEqual(result["hairpin"]?.hasPrefix("got 5000 from 198.18.0.1:"), true)
        XCTAssertEqual(result["host-specific6"]?.hasPrefix("got 6000 from [fd00:b::1]:"), true)
        XCTAssertEqual(result["host-wildcard6"]?.hasPrefix("got 7000 from [fd00:b::1]:"), true)
        // Nat chains see the first packet of each connection: 3 connections, 2, 1, 1.
        XCTAssertEqual(result["counter-specific"]?.hasPrefix("packets=3 "), true)
        XCTAssertEqual(result["counter-wildcard"]?.hasPrefix("packets=2 "), true)
        XCTAssertEqual(result["counter-specific6"]?.hasPrefix("packets=1 "), true)
        XCTAssertEqual(result["counter-wildcard6"]?.hasPrefix("packets=1 "), true)
        // UDP: the flow outlives its rule until its conntrack entry is deleted.
        XCTAssertEqual(result["udp-first"], "got 100 from 198.18.1.2:40000")
        XCTAssertEqual(result["udp-after-remove"], "got 100 from 198.18.1.2:40000")
        XCTAssertEqual(result["conntrack-deleted"], "1")
        XCTAssertNotEqual(result["udp-after-conntrack"]?.hasPrefix("got"), true)
        XCTAssertEqual(result["conntrack-deleted-again"], "0")
        XCTAssertEqual(result["outside-after-remove"], "error: connect 198.18.0.1:8080: Connection refused")
    }

    // MARK: - Without a namespace

    func testDefaultNameAndRuleNormalisation() {
        XCTAssertEqual(NatTable.defaultName(pid: 123), "berth_123")
        let rule = DNATRule(
            proto: .tcp,
            hostIP: IPAddress("0.0.0.0"),
            hostPort: 80,
            containerIP: IPAddress("::ffff:198.18.0.2")!,
            containerPort: 8080
        )
        XCTAssertNil(rule.hostIP)
        XCTAssertEqual(rule.family, .v4)
        XCTAssertEqual(rule.containerIP, IPAddress("198.18.0.2"))
        XCTAssertEqual(rule.map, .wild4)
        XCTAssertEqual(rule.element.key, [6, 0, 0, 0, 0, 80, 0, 0])
        XCTAssertEqual(rule.elementData, [198, 18, 0, 2, 0x1f, 0x90, 0, 0])
        XCTAssertNotNil(
            DNATRule(proto: .sctp, hostIP: nil, hostPort: 1, containerIP: .anyV4, containerPort: 1).unsupportedReason
        )
        XCTAssertEqual(NftType.concat([.ipv4Addr, .inetProto, .inetService]).type, 29453)  // what nft sends
        XCTAssertEqual(NftType.concat([.ipv4Addr, .inetProto, .inetService]).length, 12)
    }

    func testCapabilityReadsCapEff() throws {
        let status = try String(contentsOfFile: "/proc/self/status", encoding: .utf8)
        let line = try XCTUnwrap(status.split(separator: "\n").first { $0.hasPrefix("CapEff:") })
        let mask = try XCTUnwrap(UInt64(line.dropFirst(7).trimmingCharacters(in: .whitespaces), radix: 16))
        XCTAssertEqual(Capability.hasNetAdmin(), mask & (1 << 12) != 0)
    }

    func testErrorTextNamesOperationAndErrno() {
        let error = NetfilterError("nftables: add map inet berth_123 dnat4", errno: EPERM)
        XCTAssertEqual(error.description, "nftables: add map inet berth_123 dnat4: Operation not permitted")
    }
}
