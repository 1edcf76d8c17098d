import Mappings
import Testing

private func ip(_ text: String) -> IPAddress { IPAddress(text)! }

private func spec(
    _ hostIP: String? = nil,
    _ hostPorts: PortRange? = nil,
    _ containerPorts: PortRange,
    _ proto: Proto = .tcp
) -> PortSpec {
    PortSpec(hostIP: hostIP.map(ip), hostPorts: hostPorts, containerPorts: containerPorts, proto: proto)
}

private func single(_ port: UInt16) -> PortRange { PortRange(single: port) }

/// The reason a spec is rejected, or nil when it parses.
private func rejection(_ text: String) -> String? {
    do {
        _ = try PortSpec(parsing: text)
        return nil
    } catch {
        return error.reason
    }
}

@Suite struct PortSpecFormTests {
    static let forms: [(String, PortSpec)] = [
        ("80", spec(nil, nil, single(80))),
        ("8080:80", spec(nil, single(8080), single(80))),
        ("127.0.0.1:8080:80", spec("127.0.0.1", single(8080), single(80))),
        ("127.0.0.1::80", spec("127.0.0.1", nil, single(80))),
        (":80", spec(nil, nil, single(80))),
        ("::80", spec(nil, nil, single(80))),
        (":8080:80", spec(nil, single(8080), single(80))),
        ("0:80", spec(nil, nil, single(80))),
        ("127.0.0.1:0:80", spec("127.0.0.1", nil, single(80))),
        ("080:0080", spec(nil, single(80), single(80))),
        ("65535:65535", spec(nil, single(65535), single(65535))),
        ("0.0.0.0:80:80", spec("0.0.0.0", single(80), single(80))),
        // IPv6 in brackets
        ("[::1]:8080:80", spec("::1", single(8080), single(80))),
        ("[::1]::80", spec("::1", nil, single(80))),
        ("[::]:80:80", spec("::", single(80), single(80))),
        ("[2001:db8::1]:8080:80/udp", spec("2001:db8::1", single(8080), single(80), .udp)),
        ("[::ffff:10.0.0.1]:80:80", spec("::ffff:10.0.0.1", single(80), single(80))),
        ("[1.2.3.4]:80:80", spec("1.2.3.4", single(80), single(80))),
        // bare IPv6, the unambiguous forms
        ("::1::80", spec("::1", nil, single(80))),
        ("::::80", spec("::", nil, single(80))),
        (":::8080:80", spec("::", single(8080), single(80))),
        ("2001:4860:0:2001::68::333", spec("2001:4860:0:2001::68", nil, single(333))),
        ("::ffff:10.0.0.1:8080:80", spec("::ffff:10.0.0.1", single(8080), single(80))),
        ("1:2:3:4:5:6:7:8:8080:80", spec("1:2:3:4:5:6:7:8", single(8080), single(80))),
        ("fe80::1::80/udp", spec("fe80::1", nil, single(80), .udp)),
        // ranges
        ("8000-8010:80-90", spec(nil, PortRange(8000, 8010), PortRange(80, 90))),
        ("8000-8010:80", spec(nil, PortRange(8000, 8010), single(80))),
        ("8000-8000:80", spec(nil, PortRange(8000, 8000), single(80))),
        ("80-90", spec(nil, nil, PortRange(80, 90))),
        ("80-80", spec(nil, nil, single(80))),
        ("1-65535", spec(nil, nil, PortRange(1, 65535))),
        ("127.0.0.1:8000-8001:80-81", spec("127.0.0.1", PortRange(8000, 8001), PortRange(80, 81))),
        ("127.0.0.1::80-81/udp", spec("127.0.0.1", nil, PortRange(80, 81), .udp)),
        ("[::1]:8000-8001:80-81", spec("::1", PortRange(8000, 8001), PortRange(80, 81))),
        // protocols, any case (Docker lower-cases them)
        ("80/tcp", spec(nil, nil, single(80), .tcp)),
        ("80/udp", spec(nil, nil, single(80), .udp)),
        ("80/sctp", spec(nil, nil, single(80), .sctp)),
        ("80/UDP", spec(nil, nil, single(80), .udp)),
        ("80/Tcp", spec(nil, nil, single(80), .tcp)),
        ("8080:80/SCTP", spec(nil, single(8080), single(80), .sctp)),
    ]

    @Test(arguments: forms)
    func parses(text: String, expected: PortSpec) throws {
        #expect(try PortSpec(parsing: text) == expected)
    }

    @Test(arguments: forms)
    func descriptionParsesBack(text: String, expected: PortSpec) throws {
        #expect(try PortSpec(parsing: expected.description) == expected)
    }

    @Test func canonicalDescriptions() throws {
        #expect(try PortSpec(parsing: "80").description == "80/tcp")
        #expect(try PortSpec(parsing: "0:80/UDP").description == "80/udp")
        #expect(try PortSpec(parsing: "8000-8010:80").description == "8000-8010:80/tcp")
        #expect(try PortSpec(parsing: "127.0.0.1::80").description == "127.0.0.1::80/tcp")
        #expect(try PortSpec(parsing: "::1::80").description == "[::1]::80/tcp")
        #expect(try PortSpec(parsing: ":::80:80/sctp").description == "[::]:80:80/sctp")
    }
}

@Suite struct PortSpecMappingTests {
    let target = IPAddress.v4(172, 17, 0, 2)

    @Test func singlePortEphemeral() throws {
        let mappings = try PortSpec(parsing: "80").mappings(to: target)
        #expect(
            mappings == [
                PortMapping(proto: .tcp, hostIP: nil, hostPort: .ephemeral, containerIP: target, containerPort: 80)
            ]
        )
    }

    @Test func fixedPortOnOneAddress() throws {
        let mappings = try PortSpec(parsing: "[::1]:8080:80/udp").mappings(to: target)
        #expect(
            mappings == [
                PortMapping(
                    proto: .udp,
                    hostIP: ip("::1"),
                    hostPort: .fixed(8080),
                    containerIP: target,
                    containerPort: 80
                )
            ]
        )
        #expect(mappings.first?.description == "[::1]:8080:172.17.0.2:80/udp")
    }

    @Test func equalRangesPairUp() throws {
        let mappings = try PortSpec(parsing: "8000-8010:80-90").mappings(to: target)
        #expect(mappings.count == 11)
        #expect(mappings.map(\.hostPort) == (8000...8010).map { HostPort.fixed($0) })
        #expect(mappings.map(\.containerPort) == Array(80...90))
        #expect(mappings.allSatisfy { $0.hostIP == nil && $0.containerIP == target && $0.proto == .tcp })
    }

    @Test func hostRangeForOneContainerPortIsAnyOf() throws {
        let mappings = try PortSpec(parsing: "8000-8010:80").mappings(to: target)
        #expect(
            mappings == [
                PortMapping(
                    proto: .tcp,
                    hostIP: nil,
                    hostPort: .anyOf(PortRange(8000, 8010)),
                    containerIP: target,
                    containerPort: 80
                )
            ]
        )
    }

    @Test func containerRangeWithEphemeralHostPorts() throws {
        let mappings = try PortSpec(parsing: "80-90").mappings(to: target)
        #expect(mappings.count == 11)
        #expect(mappings.allSatisfy { $0.hostPort == .ephemeral && $0.hostIP == nil })
        #expect(mappings.map(\.containerPort) == Array(80...90))
    }

    @Test func rangesOnOneAddress() throws {
        let mappings = try PortSpec(parsing: "127.0.0.1:8000-8001:80-81").mappings(to: target)
        #expect(
            mappings.map(\.description) == [
                "127.0.0.1:8000:172.17.0.2:80/tcp", "127.0.0.1:8001:172.17.0.2:81/tcp",
            ]
        )
    }

    @Test func singleLengthHostRangeIsFixed() throws {
        let mappings = try PortSpec(parsing: "8000-8000:80").mappings(to: target)
        #expect(mappings.map(\.hostPort) == [.fixed(8000)])
    }

    @Test func wholePortSpaceEndsAt65535() throws {
        let mappings = try PortSpec(parsing: "1-65535:1-65535").mappings(to: target)
        #expect(mappings.count == 65535)
        #expect(mappings.last?.hostPort == .fixed(65535))
        #expect(mappings.last?.containerPort == 65535)
    }

    @Test func mismatchedRangesSetByHandShareTheHostRange() {
        let spec = PortSpec(hostPorts: PortRange(8000, 8002), containerPorts: PortRange(80, 81))
        let hostRange = HostPort.anyOf(PortRange(8000, 8002))
        #expect(spec.mappings(to: target).map(\.hostPort) == [hostRange, hostRange])
    }
}

@Suite struct PortSpecErrorTests {
    /// Every malformed spec and the exact reason given.
    static let errors: [(String, String)] = [
        ("", "spec is empty"),
        ("8080:", "container port is empty"),
        ("/udp", "container port is empty"),
        ("127.0.0.1:8080:", "container port is empty"),
        ("0", #"container port "0" is out of range (1-65535)"#),
        ("8080:0", #"container port "0" is out of range (1-65535)"#),
        ("65536", #"container port "65536" is out of range (1-65535)"#),
        ("99999999999999999999999", #"container port "99999999999999999999999" is out of range (1-65535)"#),
        ("70000:80", #"host port "70000" is out of range (0-65535)"#),
        ("http", #"container port "http" is not a number"#),
        ("8080:http", #"container port "http" is not a number"#),
        ("+80", #"container port "+80" is not a number"#),
        (" 80", #"container port " 80" is not a number"#),
        ("abc:80", #"host port "abc" is not a number"#),
        ("8080/udp:80", #"host port "8080/udp" is not a number"#),
        ("90-80", #"container port range "90-80" is reversed"#),
        ("9000-8000:80", #"host port range "9000-8000" is reversed"#),
        ("80-", #"container port range "80-" is not of the form START-END"#),
        ("-90", #"container port range "-90" is not of the form START-END"#),
        ("-", #"container port range "-" is not of the form START-END"#),
        ("80-90-100", #"container port range "80-90-100" is not of the form START-END"#),
        ("80-a", #"container port range "80-a" is not of the form START-END"#),
        ("192.168.1.100:-1:-1", #"host port range "-1" is not of the form START-END"#),
        ("0-10", #"container port range "0-10" is out of range (1-65535)"#),
        ("0-10:80", #"host port range "0-10" is out of range (1-65535)"#),
        ("80-70000", #"container port range "80-70000" is out of range (1-65535)"#),
        (
            "8000-8002:80-81",
            "host port range 8000-8002 (3 ports) and container port range 80-81 (2 ports) differ in length"
        ),
        ("8080:80-81", "host port 8080 (1 port) and container port range 80-81 (2 ports) differ in length"),
        ("300.1.1.1:80:80", #"host IP "300.1.1.1" is not an IPv4 or IPv6 address"#),
        ("localhost:80:80", #"host IP "localhost" is not an IPv4 or IPv6 address"#),
        ("01.2.3.4:80:80", #"host IP "01.2.3.4" is not an IPv4 or IPv6 address"#),
        ("[::1:80:80", #"host IP has no closing "]""#),
        ("[::1", #"host IP has no closing "]""#),
        ("[localhost]:80:80", #"host IP "localhost" is not an IPv4 or IPv6 address"#),
        ("[]:80:80", "host IP in brackets is empty"),
        ("[::1]", #"bracketed host IP must be followed by ":HOST_PORT:CONTAINER_PORT""#),
        ("[::1]x:80:80", #"unexpected "x" after the bracketed host IP"#),
        (
            "[::1]:80",
            #"missing host port field after the bracketed host IP; write "[::1]::80" for an ephemeral host port"#
        ),
        ("[::1]:8080:80:90", "too many colons after the bracketed host IP (expected [IP]:HOST_PORT:CONTAINER_PORT)"),
        ("80/xyz", #"unknown protocol "xyz" (expected tcp, udp or sctp)"#),
        ("80/tcp/udp", #"unknown protocol "tcp/udp" (expected tcp, udp or sctp)"#),
        ("80/", #"protocol after "/" is empty (expected tcp, udp or sctp)"#),
        ("127.0.0.1:80:80:80", "too many colons for an IPv4 host IP (expected IP:HOST_PORT:CONTAINER_PORT)"),
        ("127.0.0.1:1:2:3:4", "too many colons for an IPv4 host IP (expected IP:HOST_PORT:CONTAINER_PORT)"),
        ("a:b:c:d", #"host IP "a:b" is not an IPv4 or IPv6 address"#),
        ("::1:80", #"host IP ":" is not an IPv4 or IPv6 address"#),
        ("fe80::1:80", #"host IP "fe80:" is not an IPv4 or IPv6 address"#),
        ("[fe80::1%eth0]:80:80", #"host IP "fe80::1%eth0" has a zone index, which is not supported"#),
        ("fe80::1%eth0::80", #"host IP "fe80::1%eth0" has a zone index, which is not supported"#),
        ("fe80::1%eth0:8080:80", #"host IP "fe80::1%eth0" has a zone index, which is not supported"#),
        (
            "::1:8080:80",
            #"ambiguous bare IPv6 host IP: "::1:8080" is an address too; write "[::1]:8080:80" for host port 8080"#
        ),
        (
            "fe80::1:8080:80/udp",
            #"ambiguous bare IPv6 host IP: "fe80::1:8080" is an address too; write "[fe80::1]:8080:80/udp" for host port 8080"#
        ),
        (
            "::1:0:80",
            #"ambiguous bare IPv6 host IP: "::1:0" is an address too; write "[::1]:0:80" for host port 0"#
        ),
    ]

    @Test(arguments: errors)
    func rejects(text: String, reason: String) {
        #expect(rejection(text) == reason)
    }

    @Test(arguments: errors)
    func reasonIsOneLowercaseLine(text: String, reason: String) {
        #expect(!reason.contains("\n"))
        #expect(reason.first?.isLowercase == true)
    }

    @Test func thrownErrorCarriesSpecAndReason() {
        #expect(
            throws: PortSpecError(
                spec: "300.1.1.1:80:80",
                reason: #"host IP "300.1.1.1" is not an IPv4 or IPv6 address"#
            )
        ) {
            try PortSpec(parsing: "300.1.1.1:80:80")
        }
    }

    @Test func exactDescriptions() {
        func description(_ text: String) -> String? {
            do {
                _ = try PortSpec(parsing: text)
                return nil
            } catch {
                return error.description
            }
        }
        #expect(
            description("300.1.1.1:80:80")
                == #"invalid port spec "300.1.1.1:80:80": host IP "300.1.1.1" is not an IPv4 or IPv6 address"#
        )
        #expect(description("") == #"invalid port spec "": spec is empty"#)
        #expect(description("8080:") == #"invalid port spec "8080:": container port is empty"#)
        #expect(
            description("80/xyz") == #"invalid port spec "80/xyz": unknown protocol "xyz" (expected tcp, udp or sctp)"#
        )
        #expect(
            description("8000-8002:80-81")
                == #"invalid port spec "8000-8002:80-81": host port range 8000-8002 (3 ports) and container port range 80-81 (2 ports) differ in length"#
        )
        #expect(description("[::1") == #"invalid port spec "[::1": host IP has no closing "]""#)
    }

    @Test func userTextIsEscapedToStayOnOneLine() {
        #expect(rejection("8\n0") == #"container port "8\n0" is not a number"#)
        #expect(rejection("8\"0") == #"container port "8\"0" is not a number"#)
        #expect(
            PortSpecError(spec: "a\tb\u{1}", reason: "x").description == #"invalid port spec "a\tb\u{1}": x"#
        )
    }
}

/// What Docker's own parser (go-connections `nat.ParsePortSpec`) accepts and rejects, next to berth's
/// verdict. Mirrored from go-connections nat/nat_test.go (TestParsePortSpecFull, TestPartPortSpecIPV6,
/// TestParsePortSpecs, TestParsePortSpecsWithRange, TestParseNetworkOptsPrivateOnly,
/// TestParseNetworkOptsPublic, TestParseNetworkOptsPublicNoPort, TestParseNetworkOptsNegativePorts,
/// TestParseNetworkOptsUdp, TestParseNetworkOptsSctp, TestStringer, TestSplitProtoPort, TestParsePort) and
/// nat/parse_test.go (TestParsePortRange); the last group is read from nat.go's splitParts.
@Suite struct DockerParserParityTests {
    struct Case: Sendable, CustomTestStringConvertible {
        let spec: String
        /// Whether go-connections' ParsePortSpec accepts it.
        let docker: Bool
        /// berth's canonical description of the spec, or nil where berth rejects it.
        let berth: String?
        var testDescription: String { spec }
    }

    static let cases: [Case] = [
        // TestParsePortSpecFull
        Case(spec: "0.0.0.0:1234-1235:3333-3334/tcp", docker: true, berth: "0.0.0.0:1234-1235:3333-3334/tcp"),
        // TestPartPortSpecIPV6
        Case(spec: "[2001:4860:0:2001::68]::333", docker: true, berth: "[2001:4860:0:2001::68]::333/tcp"),
        Case(spec: "[::1]:80:80", docker: true, berth: "[::1]:80:80/tcp"),
        Case(spec: "2001:4860:0:2001::68::333", docker: true, berth: "[2001:4860:0:2001::68]::333/tcp"),
        Case(spec: "::1:80:80", docker: true, berth: nil),  // ambiguous: "::1:80" is an address too
        Case(spec: "::::80", docker: true, berth: "[::]::80/tcp"),
        // TestParsePortSpecs, TestParsePortSpecsWithRange
        Case(spec: "1234/tcp", docker: true, berth: "1234/tcp"),
        Case(spec: "2345/udp", docker: true, berth: "2345/udp"),
        Case(spec: "3456/sctp", docker: true, berth: "3456/sctp"),
        Case(spec: "1234:1234/tcp", docker: true, berth: "1234:1234/tcp"),
        Case(spec: "0.0.0.0:3456:3456/sctp", docker: true, berth: "0.0.0.0:3456:3456/sctp"),
        Case(spec: "localhost:1234:1234/tcp", docker: false, berth: nil),
        Case(spec: "1234-1236/tcp", docker: true, berth: "1234-1236/tcp"),
        Case(spec: "2345-2347:2345-2347/udp", docker: true, berth: "2345-2347:2345-2347/udp"),
        Case(spec: "0.0.0.0:1234-1236:1234-1236/tcp", docker: true, berth: "0.0.0.0:1234-1236:1234-1236/tcp"),
        Case(spec: "localhost:1234-1236:1234-1236/tcp", docker: false, berth: nil),
        // TestParseNetworkOpts*
        Case(spec: "192.168.1.100::80", docker: true, berth: "192.168.1.100::80/tcp"),
        Case(spec: "192.168.1.100:8080:80", docker: true, berth: "192.168.1.100:8080:80/tcp"),
        Case(spec: "192.168.1.100", docker: false, berth: nil),
        Case(spec: "192.168.1.100:-1:-1", docker: false, berth: nil),
        Case(spec: "192.168.1.100::6000/udp", docker: true, berth: "192.168.1.100::6000/udp"),
        Case(spec: "192.168.1.100::6000/sctp", docker: true, berth: "192.168.1.100::6000/sctp"),
        // TestStringer
        Case(spec: ":8080:6000/tcp", docker: true, berth: "8080:6000/tcp"),
        Case(spec: "::6000", docker: true, berth: "6000/tcp"),
        Case(spec: "[::1]:8080:6000/udp", docker: true, berth: "[::1]:8080:6000/udp"),
        Case(spec: "[::1]::6000/udp", docker: true, berth: "[::1]::6000/udp"),
        Case(spec: "::1:8080:6000/udp", docker: true, berth: nil),  // ambiguous, as above
        Case(spec: "::::6000/udp", docker: true, berth: "[::]::6000/udp"),
        // TestSplitProtoPort, TestParsePort, TestParsePortRange, through ParsePortSpec
        Case(spec: "1234/", docker: true, berth: nil),  // Docker takes an empty protocol as tcp
        Case(spec: "1234/UDP", docker: true, berth: "1234/udp"),
        Case(spec: "0", docker: true, berth: nil),  // container port 0
        Case(spec: "0-0", docker: true, berth: nil),
        Case(spec: "0123", docker: true, berth: "123/tcp"),
        Case(spec: "65535", docker: true, berth: "65535/tcp"),
        Case(spec: "65536", docker: false, berth: nil),
        Case(spec: "asdf", docker: false, berth: nil),
        Case(spec: "9000-8000", docker: false, berth: nil),
        Case(spec: "8000-", docker: false, berth: nil),
        Case(spec: "-9000", docker: false, berth: nil),
        Case(spec: "8000-9000a", docker: false, berth: nil),
        Case(spec: "8000a-9000", docker: false, berth: nil),
        Case(spec: "-", docker: false, berth: nil),
        Case(spec: "/udp", docker: false, berth: nil),
        // splitParts and the bracket stripping in nat.go
        Case(spec: "0:80", docker: true, berth: "80/tcp"),  // libnetwork allocates a free port for 0
        Case(spec: "[1.2.3.4]:80:80", docker: true, berth: "1.2.3.4:80:80/tcp"),
        Case(spec: "[]:80:80", docker: true, berth: nil),  // Docker: all addresses
        Case(spec: "[::1]:80", docker: false, berth: nil),
        Case(spec: "::1:80", docker: false, berth: nil),
        Case(spec: ":::80", docker: false, berth: nil),
        Case(spec: ":::80:80", docker: true, berth: "[::]:80:80/tcp"),
        Case(spec: "8000-8001-8002:80", docker: true, berth: nil),  // Docker ignores "-8002"
        Case(spec: "8080:80-81", docker: false, berth: nil),
        Case(spec: "8000-8010:80", docker: true, berth: "8000-8010:80/tcp"),
        Case(spec: "[fe80::1%eth0]:80:80", docker: false, berth: nil),
    ]

    @Test(arguments: cases)
    func verdict(_ c: Case) {
        let parsed = try? PortSpec(parsing: c.spec)
        #expect(parsed?.description == c.berth)
    }

    @Test func whatDockerRejectsBerthRejects() {
        for c in Self.cases where !c.docker {
            #expect(c.berth == nil, "\(c.spec)")
        }
    }
}

/// Found while writing the fuzzers' one-line check: `quoted` escaped C0 controls only, so NEL (U+0085)
/// and the Unicode line and paragraph separators, which log readers and some terminals break lines on,
/// went into the error line as they were.
@Suite struct PortSpecUnicodeLineBreakTests {
    @Test(arguments: [
        ("80/\u{2028}", #"invalid port spec "80/\u{2028}": unknown protocol "\u{2028}" (expected tcp, udp or sctp)"#),
        ("80/\u{2029}", #"invalid port spec "80/\u{2029}": unknown protocol "\u{2029}" (expected tcp, udp or sctp)"#),
        ("\u{85}80", #"invalid port spec "\u{85}80": container port "\u{85}80" is not a number"#),
    ])
    func lineSeparatorIsEscaped(text: String, message: String) throws {
        #expect(throws: PortSpecError.self) { try PortSpec(parsing: text) }
        do {
            _ = try PortSpec(parsing: text)
        } catch {
            #expect(error.description == message)
        }
    }
}

/// inet_pton reads a C string, so an address with a NUL inside parsed as the part before it:
/// `127.0.0.1\0junk` was 127.0.0.1.
@Suite struct AddressWithNULTests {
    @Test func addressWithNULIsRejected() {
        #expect(IPAddress("127.0.0.1\0junk") == nil)
        #expect(IPAddress("::1\0") == nil)
        #expect(rejection("127.0.0.1\0junk:80:80") == #"host IP "127.0.0.1\u{0}junk" is not an IPv4 or IPv6 address"#)
    }
}
