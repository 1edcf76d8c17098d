import Mappings
import Testing

private func invocation(_ args: [String]) throws -> ProxyInvocation? {
    guard case .run(let invocation) = try ProxyFlags.parse(args) else { return nil }
    return invocation
}

/// The error message for args, or nil when they parse.
private func failure(_ args: [String]) -> String? {
    do {
        _ = try ProxyFlags.parse(args)
        return nil
    } catch {
        return error.message
    }
}

private let ports = ["-host-port", "8080", "-container-port", "80"]

@Suite struct ProxyFlagsParseTests {
    @Test func dockerdCommandLine() throws {
        let args = [
            "-proto", "tcp", "-host-ip", "0.0.0.0", "-host-port", "8080", "-container-ip", "172.17.0.2",
            "-container-port", "80", "-use-listen-fd",
        ]
        let expected = ProxyInvocation(
            proto: .tcp,
            hostIP: .anyV4,
            hostPort: 8080,
            containerIP: .v4(172, 17, 0, 2),
            containerPort: 80,
            useListenFD: true
        )
        #expect(try ProxyFlags.parse(args) == .run(expected))
    }

    @Test func dockerdIPv6CommandLine() throws {
        let args = [
            "-proto", "udp", "-host-ip", "::1", "-host-port", "53", "-container-ip", "fd00::2",
            "-container-port", "5353",
        ]
        let parsed = try invocation(args)
        #expect(parsed?.proto == .udp)
        #expect(parsed?.hostIP == IPAddress("::1"))
        #expect(parsed?.containerIP == IPAddress("fd00::2"))
        #expect(parsed?.hostPort == 53)
        #expect(parsed?.containerPort == 5353)
        #expect(parsed?.useListenFD == false)
    }

    @Test func defaultsAreDockerProxys() throws {
        #expect(
            try invocation(ports)
                == ProxyInvocation(
                    proto: .tcp,
                    hostIP: .anyV4,
                    hostPort: 8080,
                    containerIP: .anyV4,
                    containerPort: 80,
                    useListenFD: false
                )
        )
    }

    static let valueSpellings: [(name: String, value: String, check: @Sendable (ProxyInvocation) -> Bool)] = [
        ("proto", "udp", { $0.proto == .udp }),
        ("proto", "sctp", { $0.proto == .sctp }),
        ("host-ip", "127.0.0.1", { $0.hostIP == .loopbackV4 }),
        ("host-ip", "::", { $0.hostIP == .anyV6 }),
        ("host-port", "9090", { $0.hostPort == 9090 }),
        ("container-ip", "10.0.0.7", { $0.containerIP == .v4(10, 0, 0, 7) }),
        ("container-port", "443", { $0.containerPort == 443 }),
    ]

    @Test(arguments: 0..<valueSpellings.count)
    func everyValueFlagSpelling(index: Int) throws {
        let (name, value, check) = Self.valueSpellings[index]
        for form in [["-\(name)", value], ["--\(name)", value], ["-\(name)=\(value)"], ["--\(name)=\(value)"]] {
            let parsed = try invocation(ports + form)
            #expect(parsed.map(check) == true, "\(form)")
        }
    }

    @Test(arguments: [
        (["-use-listen-fd"], true), (["--use-listen-fd"], true),
        (["-use-listen-fd=true"], true), (["--use-listen-fd=true"], true),
        (["-use-listen-fd=false"], false), (["--use-listen-fd=false"], false),
        (["-use-listen-fd=1"], true), (["-use-listen-fd=0"], false),
        (["-use-listen-fd=t"], true), (["-use-listen-fd=F"], false),
        (["-use-listen-fd=TRUE"], true), (["-use-listen-fd=False"], false),
        (["-use-listen-fd", "-use-listen-fd=false"], false), ([], false),
    ])
    func booleanSpellings(form: [String], expected: Bool) throws {
        #expect(try invocation(ports + form)?.useListenFD == expected)
    }

    @Test func laterFlagWins() throws {
        let parsed = try invocation(ports + ["-host-port", "1", "--proto=udp", "-proto", "tcp"])
        #expect(parsed?.hostPort == 1)
        #expect(parsed?.proto == .tcp)
    }

    @Test func hostPortZeroIsEphemeral() throws {
        let parsed = try invocation(["-host-port", "0", "-container-port", "80"])
        #expect(parsed?.hostPort == 0)
        #expect(parsed?.mapping.hostPort == .ephemeral)
    }

    @Test func listenFDMakesHostPortOptional() throws {
        let parsed = try invocation(["-container-ip", "172.17.0.2", "-container-port", "80", "-use-listen-fd"])
        #expect(parsed?.hostPort == 0)
        #expect(parsed?.useListenFD == true)
    }

    @Test func portBounds() throws {
        #expect(try invocation(["-host-port", "65535", "-container-port", "65535"])?.hostPort == 65535)
        #expect(try invocation(["-host-port", "1", "-container-port", "1"])?.containerPort == 1)
    }

    @Test func mappedIPv4IsReadAsIPv4() throws {
        let parsed = try invocation(ports + ["-host-ip", "::ffff:127.0.0.1", "-container-ip", "::ffff:172.17.0.2"])
        #expect(parsed?.hostIP == .loopbackV4)
        #expect(parsed?.containerIP == .v4(172, 17, 0, 2))
    }

    @Test func valueMayLookLikeAFlag() {
        // Go's flag package takes the next argument as the value, whatever it looks like.
        #expect(
            failure(["-proto", "-host-port"] + ports)
                == #"invalid value "-host-port" for flag -proto: unsupported protocol (expected tcp, udp or sctp)"#
        )
    }

    @Test func doubleDashEndsTheFlags() throws {
        #expect(try invocation(ports + ["--"])?.containerPort == 80)
        #expect(failure(ports + ["--", "-proto", "udp"]) == #"unexpected argument "-proto""#)
    }

    @Test func mapping() {
        let invocation = ProxyInvocation(
            proto: .udp,
            hostIP: .loopbackV4,
            hostPort: 5353,
            containerIP: .v4(172, 17, 0, 2),
            containerPort: 53
        )
        #expect(
            invocation.mapping
                == PortMapping(
                    proto: .udp,
                    hostIP: .loopbackV4,
                    hostPort: .fixed(5353),
                    containerIP: .v4(172, 17, 0, 2),
                    containerPort: 53
                )
        )
        #expect(invocation.mapping.description == "127.0.0.1:5353:172.17.0.2:53/udp")
    }
}

@Suite struct ProxyFlagsVersionAndHelpTests {
    @Test(arguments: [
        ["-v"], ["--v"], ["-version"], ["--version"], ["-v=true"], ["-version=1"], ["-v", "-version=false", "-v"],
        ports + ["-v"], ["-v", "-proto", "xyz"],
    ])
    func version(args: [String]) throws {
        #expect(try ProxyFlags.parse(args) == .version)
    }

    @Test func versionSwitchedOffRuns() throws {
        #expect(try invocation(ports + ["-v=false"])?.hostPort == 8080)
        #expect(try invocation(ports + ["-v", "-version=false"])?.hostPort == 8080)
    }

    @Test func versionDoesNotHideASyntaxError() {
        #expect(failure(["-v", "-bogus"]) == "flag provided but not defined: -bogus")
    }

    @Test(arguments: [
        ["-h"], ["--h"], ["-help"], ["--help"], ["-h=x"], ["-proto", "tcp", "-h"], ["-h", "-bogus"], ["-help", "x"],
    ])
    func help(args: [String]) throws {
        #expect(try ProxyFlags.parse(args) == .help)
    }

    @Test func errorBeforeHelpWins() {
        #expect(failure(["-bogus", "-h"]) == "flag provided but not defined: -bogus")
    }

    @Test func usageInGoFlagLayout() {
        let usage = ProxyFlags.usage
        #expect(
            usage.hasPrefix("Usage of docker-proxy:\n  -container-ip value\n    \tcontainer ip (default 0.0.0.0)\n")
        )
        #expect(usage.hasSuffix("  -version\n    \tprint version information and quit\n"))
        for flag in ["-container-port int", "-host-ip value", "-host-port int", "-proto string", "-use-listen-fd"] {
            #expect(usage.contains("\n  \(flag)\n    \t"), "\(flag)")
        }
        #expect(usage.contains("\n  -v\tprint version information and quit\n"))
        #expect(ProxyFlags.usage(program: "berth").hasPrefix("Usage of berth:\n"))
    }
}

@Suite struct ProxyFlagsErrorTests {
    static let errors: [([String], String)] = [
        (["-bogus"], "flag provided but not defined: -bogus"),
        (["--bogus=1"], "flag provided but not defined: -bogus"),
        (ports + ["-p", "80:80"], "flag provided but not defined: -p"),
        (["-proto"], "flag needs an argument: -proto"),
        (ports + ["--host-ip"], "flag needs an argument: -host-ip"),
        (["-container-port"], "flag needs an argument: -container-port"),
        (["---x"], "bad flag syntax: ---x"),
        (["-=x"], "bad flag syntax: -=x"),
        (["--=x"], "bad flag syntax: --=x"),
        (ports + ["-use-listen-fd=maybe"], #"invalid boolean value "maybe" for -use-listen-fd: parse error"#),
        (ports + ["-use-listen-fd="], #"invalid boolean value "" for -use-listen-fd: parse error"#),
        (["-v=yes"], #"invalid boolean value "yes" for -v: parse error"#),
        (
            ["-host-port", "abc", "-container-port", "80"],
            #"invalid value "abc" for flag -host-port: must be a decimal number"#
        ),
        (
            ["-host-port", "70000", "-container-port", "80"],
            #"invalid value "70000" for flag -host-port: out of range (0-65535)"#
        ),
        (
            ["-host-port", "-1", "-container-port", "80"],
            #"invalid value "-1" for flag -host-port: out of range (0-65535)"#
        ),
        (
            ["-host-port", "+80", "-container-port", "80"],
            #"invalid value "+80" for flag -host-port: must be a decimal number"#
        ),
        (
            ["-host-port", "", "-container-port", "80"],
            #"invalid value "" for flag -host-port: must be a decimal number"#
        ),
        (
            ["-host-port", "080", "-container-port", "80"],
            #"invalid value "080" for flag -host-port: must be a decimal number without leading zeros"#
        ),
        (
            ["-host-port", "0x50", "-container-port", "80"],
            #"invalid value "0x50" for flag -host-port: must be a decimal number without leading zeros"#
        ),
        (
            ["-host-port", "80", "-container-port", "0"],
            #"invalid value "0" for flag -container-port: out of range (1-65535)"#
        ),
        (
            ["-host-port", "80", "-container-port=65536"],
            #"invalid value "65536" for flag -container-port: out of range (1-65535)"#
        ),
        (
            ["-host-port", "80", "-container-port", "http"],
            #"invalid value "http" for flag -container-port: must be a decimal number"#
        ),
        (
            ports + ["-host-ip", "300.1.1.1"],
            #"invalid value "300.1.1.1" for flag -host-ip: invalid IP address: 300.1.1.1"#
        ),
        (
            ports + ["-host-ip", "localhost"],
            #"invalid value "localhost" for flag -host-ip: invalid IP address: localhost"#
        ),
        (ports + ["-host-ip="], #"invalid value "" for flag -host-ip: empty IP address"#),
        (ports + ["-host-ip", "[::1]"], #"invalid value "[::1]" for flag -host-ip: invalid IP address: [::1]"#),
        (
            ports + ["-container-ip", "172.17.0"],
            #"invalid value "172.17.0" for flag -container-ip: invalid IP address: 172.17.0"#
        ),
        (
            ports + ["-container-ip", "fe80::1%eth0"],
            #"invalid value "fe80::1%eth0" for flag -container-ip: invalid IP address: fe80::1%eth0"#
        ),
        (
            ports + ["-proto", "xyz"],
            #"invalid value "xyz" for flag -proto: unsupported protocol (expected tcp, udp or sctp)"#
        ),
        (
            ports + ["-proto", "TCP"],
            #"invalid value "TCP" for flag -proto: unsupported protocol (expected tcp, udp or sctp)"#
        ),
        (ports + ["-proto="], #"invalid value "" for flag -proto: unsupported protocol (expected tcp, udp or sctp)"#),
        ([], "missing required flags: -host-port, -container-port"),
        (["-proto", "udp"], "missing required flags: -host-port, -container-port"),
        (["-host-port", "80"], "missing required flag: -container-port"),
        (["-container-port", "80"], "missing required flag: -host-port"),
        (["-use-listen-fd"], "missing required flag: -container-port"),
        (["foo"], #"unexpected argument "foo""#),
        (["-"], #"unexpected argument "-""#),
        (ports + ["extra"], #"unexpected argument "extra""#),
        (ports + ["-use-listen-fd", "false"], #"unexpected argument "false"; write -use-listen-fd=false"#),
        (ports + ["-v", "true"], #"unexpected argument "true"; write -v=true"#),
    ]

    @Test(arguments: errors)
    func rejects(args: [String], message: String) {
        #expect(failure(args) == message)
    }

    @Test(arguments: errors)
    func messageIsOneLowercaseLine(args: [String], message: String) {
        #expect(!message.contains("\n"))
        #expect(message.first?.isLowercase == true)
    }

    @Test func descriptionIsTheMessage() {
        #expect(ProxyFlagError("flag needs an argument: -proto").description == "flag needs an argument: -proto")
        #expect(throws: ProxyFlagError("flag provided but not defined: -x")) { try ProxyFlags.parse(["-x"]) }
    }
}

@Suite struct LooksLikeProxyInvocationTests {
    static let proxyStyle: [[String]] = [
        ["-proto", "tcp"], ["--proto", "tcp"], ["-proto=tcp"], ["--proto=udp"],
        ["-host-ip", "0.0.0.0"], ["--host-ip=::"], ["-host-port", "80"], ["--host-port=80"],
        ["-container-ip", "172.17.0.2"], ["--container-ip=172.17.0.2"],
        ["-container-port", "80"], ["--container-port=80"],
        ["-use-listen-fd"], ["--use-listen-fd=false"],
        ["-v"], ["--v"], ["-version"], ["-help"], ["--h"], ["-h=1"],
        ["-h", "-proto", "tcp"], ["--help", "--container-port=80"], ["--version", "-use-listen-fd"],
    ]

    static let notProxyStyle: [[String]] = [
        [], ["run"], ["run", "-p", "80:80"], ["-p", "80:80"], ["--port", "80"], ["--publish=80"],
        ["-h"], ["--help"], ["--version"], ["-h", "run"], ["--help", "run"], ["proto"], ["-"],
        ["--"], ["---proto"], ["-protocol", "tcp"], ["--verbose"],
    ]

    @Test(arguments: proxyStyle)
    func recognises(args: [String]) {
        #expect(ProxyFlags.looksLikeProxyInvocation(args))
    }

    @Test(arguments: notProxyStyle)
    func leavesAlone(args: [String]) {
        #expect(!ProxyFlags.looksLikeProxyInvocation(args))
    }
}

/// Found by ProxyFlagsFuzzer: Go's wordings print the flag or the value as it is, so a line break in it
/// (`--\rx`, which dockerd never passes but a hand-written command line may) split the one-line error.
/// Plain text stays as Go prints it; anything with a control character is quoted.
@Suite struct ProxyFlagsLineBreakTests {
    @Test(arguments: [
        (ports + ["--\rx"], #"flag provided but not defined: "-\rx""#),
        (["-a\nb"], #"flag provided but not defined: "-a\nb""#),
        (["---\nx"], #"bad flag syntax: "---\nx""#),
        (
            ports + ["-host-ip", "1.2.3.4\n"],
            #"invalid value "1.2.3.4\n" for flag -host-ip: invalid IP address: "1.2.3.4\n""#
        ),
        (
            ports + ["-container-ip=fe80::1\u{2028}"],
            #"invalid value "fe80::1\u{2028}" for flag -container-ip: invalid IP address: "fe80::1\u{2028}""#
        ),
    ])
    func flagOrValueWithALineBreakIsQuoted(args: [String], message: String) {
        #expect(failure(args) == message)
    }
}
