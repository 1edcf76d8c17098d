import Mappings
import Testing

private func arguments(_ args: [String]) throws -> RunArguments? {
    guard case .run(let arguments) = try RunArguments.parse(args) else { return nil }
    return arguments
}

/// The error message for args, or nil when they parse.
private func failure(_ args: [String]) -> String? {
    do {
        _ = try RunArguments.parse(args)
        return nil
    } catch {
        return error.message
    }
}

private let minimal = ["-p", "80", "127.0.0.1"]

@Suite struct RunArgumentsParseTests {
    @Test func defaults() throws {
        let parsed = try #require(try arguments(minimal))
        #expect(parsed == RunArguments(specs: ["80"], target: .loopbackV4))
        #expect(parsed.connectTimeout == 5)
        #expect(parsed.halfCloseTimeout == 3600)
        #expect(parsed.udpTimeout == 120)
        #expect(parsed.udpTimeoutUnreplied == nil)
        #expect(parsed.effectiveUDPTimeoutUnreplied == 30)
        #expect(parsed.udpMaxFlows == 4096)
        #expect(parsed.udpMaxAnswered == nil)
        #expect(parsed.threads == nil)
        #expect(parsed.busyPoll == 0)
        #expect(parsed.bulkAfter == 1 << 20)
        #expect(parsed.bulkLoops == nil)
        #expect(parsed.bulkNice == 10)
        #expect(parsed.pipeSize == 1 << 20)
        #expect(parsed.mode == nil)
        #expect(parsed.nftTable == nil)
        #expect(parsed.logLevel == "notice")
        #expect(parsed.proxyProtocol == nil)
        #expect(!parsed.proxyProtocolUDP)
    }

    /// Each option, spelled `--name value` and `--name=value`, and what it sets.
    static let options: [(name: String, value: String, check: @Sendable (RunArguments) -> Bool)] = [
        ("--connect-timeout", "2.5", { $0.connectTimeout == 2.5 }),
        ("--half-close-timeout", "60", { $0.halfCloseTimeout == 60 }),
        ("--udp-timeout", "0.25", { $0.udpTimeout == 0.25 && $0.effectiveUDPTimeoutUnreplied == 0.25 }),
        ("--udp-timeout-unreplied", "5", { $0.udpTimeoutUnreplied == 5 && $0.effectiveUDPTimeoutUnreplied == 5 }),
        ("--udp-max-flows", "64", { $0.udpMaxFlows == 64 }),
        ("--udp-max-answered", "0", { $0.udpMaxAnswered == 0 }),
        ("--threads", "3", { $0.threads == 3 }),
        ("--busy-poll", "50", { $0.busyPoll == 50 }),
        ("--bulk-after", "65536", { $0.bulkAfter == 65536 }),
        ("--bulk-after", "0", { $0.bulkAfter == 0 }),
        ("--bulk-loops", "0", { $0.bulkLoops == 0 }),
        ("--bulk-loops", "4", { $0.bulkLoops == 4 }),
        ("--bulk-nice", "19", { $0.bulkNice == 19 }),
        ("--pipe-size", "65536", { $0.pipeSize == 65536 }),
        ("--mode", "userspace", { $0.mode == .userspace }),
        ("--mode", "kernel", { $0.mode == .kernel }),
        ("--mode", "hybrid", { $0.mode == .hybrid }),
        ("--nft-table", "berth_test-1", { $0.nftTable == "berth_test-1" }),
        ("--log-level", "trace", { $0.logLevel == "trace" }),
        ("--log-level", "critical", { $0.logLevel == "critical" }),
        ("--publish", "8080:80", { $0.specs == ["80", "8080:80"] }),
        ("--proxy-protocol", "v1", { $0.proxyProtocol == .v1 }),
        ("--proxy-protocol", "v2", { $0.proxyProtocol == .v2 }),
        ("--proxy-protocol-udp", "v2", { $0.proxyProtocolUDP }),
    ]

    @Test(arguments: options)
    func optionBothSpellings(name: String, value: String, check: @Sendable (RunArguments) -> Bool) throws {
        let separate = try #require(try arguments(minimal + [name, value]))
        #expect(check(separate), "\(name) \(value)")
        let joined = try #require(try arguments(minimal + ["\(name)=\(value)"]))
        #expect(separate == joined, "\(name)=\(value)")
    }

    @Test func everyLogLevel() throws {
        for level in RunArguments.logLevels {
            #expect(try arguments(minimal + ["--log-level", level])?.logLevel == level)
        }
        #expect(RunArguments.logLevels == ["trace", "debug", "info", "notice", "warning", "error", "critical"])
    }

    @Test(arguments: [
        ["-p", "80"], ["--publish", "80"], ["--publish=80"], ["-p80"], ["-p=80"],
    ])
    func publishSpellings(form: [String]) throws {
        #expect(try arguments(form + ["10.0.0.2"])?.specs == ["80"])
    }

    @Test func repeatedPublishKeepsItsOrder() throws {
        let parsed = try arguments([
            "-p", "1", "--publish", "2", "172.17.0.2", "--publish=3", "-p4", "--threads", "2", "-p",
            "127.0.0.1:5:5/udp",
        ])
        #expect(parsed?.specs == ["1", "2", "3", "4", "127.0.0.1:5:5/udp"])
        #expect(parsed?.target == .v4(172, 17, 0, 2))
        #expect(parsed?.threads == 2)
    }

    @Test func tenThousandPublishes() throws {
        var args: [String] = []
        for port in 20000..<30000 { args += ["-p", "127.0.0.1:\(port):9"] }
        let parsed = try arguments(args + ["127.0.0.1"])
        #expect(parsed?.specs.count == 10_000)
        #expect(parsed?.specs.first == "127.0.0.1:20000:9")
        #expect(parsed?.specs.last == "127.0.0.1:29999:9")
    }

    @Test func targetMayComeFirstOrBetweenOptions() throws {
        #expect(try arguments(["127.0.0.1", "-p", "80"]) == arguments(minimal))
        #expect(try arguments(["-p", "80", "::1", "--threads", "1"])?.target == .loopbackV6)
    }

    @Test func laterOptionWins() throws {
        let parsed = try arguments(minimal + ["--threads", "1", "--mode=kernel", "--threads=2", "--mode", "hybrid"])
        #expect(parsed?.threads == 2)
        #expect(parsed?.mode == .hybrid)
    }

    @Test func valueMayLookLikeAnOption() throws {
        #expect(try arguments(["-p", "80", "--nft-table", "-x", "127.0.0.1"])?.nftTable == "-x")
        #expect(try arguments(["-p", "--help", "127.0.0.1"])?.specs == ["--help"])
        #expect(failure(minimal + ["--busy-poll", "-1"]) == "--busy-poll must be between 0 and 1000000 microseconds")
    }

    @Test func numberSpellings() throws {
        #expect(try arguments(minimal + ["--connect-timeout", "1e-3"])?.connectTimeout == 0.001)
        #expect(try arguments(minimal + ["--udp-timeout=7"])?.udpTimeout == 7)
        #expect(try arguments(minimal + ["--threads", "+4"])?.threads == 4)
    }

    @Test func doubleDashEndsTheOptions() throws {
        #expect(try arguments(["-p", "80", "--", "127.0.0.1"])?.target == .loopbackV4)
        #expect(try arguments(["-p", "80", "--", "::1"])?.specs == ["80"])
        #expect(
            failure(["-p", "80", "--", "-p", "127.0.0.1"])
                == #"unexpected argument "127.0.0.1": the target IP is already "-p""#
        )
        #expect(failure(["-p", "80", "--", "--help"]) == #"target IP "--help" is not an IPv4 or IPv6 address"#)
        #expect(failure(["-p", "80", "--"]) == "missing the target IP, the container's address")
    }

    @Test func ipv6Target() throws {
        #expect(try arguments(["-p", "80", "fd00::2"])?.target == IPAddress("fd00::2"))
    }
}

@Suite struct RunArgumentsHelpTests {
    @Test(arguments: [
        ["-h"], ["--help"], ["-p", "80", "--help"], ["--help", "--bogus"], ["--help", "1", "2"],
        ["--threads", "1", "-h"],
    ])
    func help(args: [String]) throws {
        #expect(try RunArguments.parse(args) == .help)
    }

    @Test func errorBeforeHelpWins() {
        #expect(failure(["--bogus", "--help"]) == #"unknown option "--bogus""#)
    }

    @Test(arguments: [["--version"], ["-p", "80", "--version", "x"]])
    func version(args: [String]) throws {
        #expect(try RunArguments.parse(args) == .version)
    }

    @Test func helpListsEveryOptionAndDefault() {
        let help = RunArguments.help
        for option in [
            "-p, --publish <spec>", "<target-ip>", "--connect-timeout <seconds>", "--half-close-timeout <seconds>",
            "--udp-timeout <seconds>", "--udp-timeout-unreplied <seconds>", "--udp-max-flows <n>",
            "--udp-max-answered <n>", "--threads <n>",
            "--busy-poll <us>",
            "--pipe-size <bytes>", "--mode <mode>", "--nft-table <name>", "--log-level <level>", "--version",
            "-h, --help", "--proxy-protocol <version>", "--proxy-protocol-udp <version>",
        ] {
            #expect(help.contains("\n  \(option) ") || help.contains("\n  \(option)\n"), "\(option)")
        }
        for text in [
            "[HOST_IP:][HOST_PORT:]CONTAINER_PORT[/PROTO]", "(default: 5)", "(default: 3600)", "(default: 120)",
            "(default: 4096)", "(default: 0)", "(default: 1048576)", "(default: notice)", "berth_<pid>",
            "80/tcp -> 0.0.0.0:49153", "berth run -p 127.0.0.1:80:80 172.17.0.2",
        ] {
            #expect(help.contains(text), "\(text)")
        }
        #expect(help.hasPrefix("OVERVIEW: Publish ports of one container address until SIGINT or SIGTERM.\n"))
        #expect(help.hasSuffix(".\n"))
        for line in help.split(separator: "\n") { #expect(line.count <= 80, "\(line)") }
    }
}

@Suite struct RunArgumentsErrorTests {
    static let errors: [([String], String)] = [
        // The command line itself
        (minimal + ["--bogus"], #"unknown option "--bogus""#),
        (minimal + ["--bogus=1"], #"unknown option "--bogus""#),
        (minimal + ["-x"], #"unknown option "-x""#),
        (minimal + ["-hv"], #"unknown option "-hv""#),
        (minimal + ["---p"], #"unknown option "---p""#),
        (minimal + ["--publish-all"], #"unknown option "--publish-all""#),
        (minimal + ["--Mode", "kernel"], #"unknown option "--Mode""#),
        (["-p"], "missing value for -p"),
        (["127.0.0.1", "--publish"], "missing value for --publish"),
        (minimal + ["--connect-timeout"], "missing value for --connect-timeout"),
        (minimal + ["--half-close-timeout"], "missing value for --half-close-timeout"),
        (minimal + ["--udp-timeout"], "missing value for --udp-timeout"),
        (minimal + ["--udp-max-flows"], "missing value for --udp-max-flows"),
        (minimal + ["--threads"], "missing value for --threads"),
        (minimal + ["--busy-poll"], "missing value for --busy-poll"),
        (minimal + ["--pipe-size"], "missing value for --pipe-size"),
        (minimal + ["--mode"], "missing value for --mode"),
        (minimal + ["--nft-table"], "missing value for --nft-table"),
        (minimal + ["--log-level"], "missing value for --log-level"),
        (minimal + ["--proxy-protocol", "v3"], #"invalid value "v3" for --proxy-protocol: must be v1 or v2"#),
        (minimal + ["--proxy-protocol-udp", "v1"], #"invalid value "v1" for --proxy-protocol-udp: must be v2"#),
        (minimal + ["--help=yes"], "--help takes no value"),
        (minimal + ["--version="], "--version takes no value"),
        ([], "missing the target IP, the container's address"),
        (["-p", "80"], "missing the target IP, the container's address"),
        (minimal + ["10.0.0.2"], #"unexpected argument "10.0.0.2": the target IP is already "127.0.0.1""#),
        (["-p", "80", "81", "127.0.0.1"], #"unexpected argument "127.0.0.1": the target IP is already "81""#),
        (minimal + ["-"], #"unexpected argument "-": the target IP is already "127.0.0.1""#),
        // Values that are not numbers, or not one of the names
        (minimal + ["--connect-timeout", "five"], #"invalid value "five" for --connect-timeout: must be a number"#),
        (minimal + ["--half-close-timeout="], #"invalid value "" for --half-close-timeout: must be a number"#),
        (minimal + ["--udp-timeout", "90s"], #"invalid value "90s" for --udp-timeout: must be a number"#),
        (minimal + ["--udp-max-flows", "1e3"], #"invalid value "1e3" for --udp-max-flows: must be a whole number"#),
        (minimal + ["--threads", "x"], #"invalid value "x" for --threads: must be a whole number"#),
        (minimal + ["--threads", "1.5"], #"invalid value "1.5" for --threads: must be a whole number"#),
        (minimal + ["--busy-poll", " 5"], #"invalid value " 5" for --busy-poll: must be a whole number"#),
        (minimal + ["--pipe-size", "1M"], #"invalid value "1M" for --pipe-size: must be a whole number"#),
        (
            minimal + ["--pipe-size", "99999999999999999999"],
            #"invalid value "99999999999999999999" for --pipe-size: must be a whole number"#
        ),
        (minimal + ["--mode", "fast"], #"invalid value "fast" for --mode: must be userspace, kernel or hybrid"#),
        (minimal + ["--mode=Kernel"], #"invalid value "Kernel" for --mode: must be userspace, kernel or hybrid"#),
        (
            minimal + ["--log-level", "verbose"],
            #"invalid value "verbose" for --log-level: must be trace, debug, info, notice, warning, error or critical"#
        ),
        (minimal + ["--threads", "a\nb"], #"invalid value "a\nb" for --threads: must be a whole number"#),
        // validate(): the same words as always, in the same order
        (minimal + ["--nft-table", ""], "--nft-table must be 1 to 64 letters, digits, _ or -"),
        (minimal + ["--nft-table", "a b"], "--nft-table must be 1 to 64 letters, digits, _ or -"),
        (
            minimal + ["--nft-table", String(repeating: "t", count: 65)],
            "--nft-table must be 1 to 64 letters, digits, _ or -"
        ),
        (["127.0.0.1"], "nothing to publish: give at least one -p"),
        (["127.0.0.1", "--nft-table", "a.b"], "--nft-table must be 1 to 64 letters, digits, _ or -"),
        (minimal + ["--connect-timeout", "0"], "--connect-timeout must be more than 0 seconds"),
        (minimal + ["--connect-timeout", "nan"], "--connect-timeout must be more than 0 seconds"),
        (minimal + ["--connect-timeout", "inf"], "--connect-timeout must be at most 1000000000 seconds"),
        (minimal + ["--half-close-timeout", "-1"], "--half-close-timeout must be more than 0 seconds"),
        (minimal + ["--half-close-timeout", "1e21"], "--half-close-timeout must be at most 1000000000 seconds"),
        (minimal + ["--udp-timeout", "0"], "--udp-timeout must be more than 0 seconds"),
        (minimal + ["--udp-timeout-unreplied", "0"], "--udp-timeout-unreplied must be more than 0 seconds"),
        (
            minimal + ["--udp-timeout", "10", "--udp-timeout-unreplied", "20"],
            "--udp-timeout-unreplied must be at most --udp-timeout"
        ),
        (minimal + ["--udp-max-flows", "0"], "--udp-max-flows must be between 1 and 1000000"),
        (minimal + ["--udp-max-flows", "1000001"], "--udp-max-flows must be between 1 and 1000000"),
        (minimal + ["--udp-max-answered", "-1"], "--udp-max-answered must be between 0 and --udp-max-flows (4096)"),
        (
            minimal + ["--udp-max-flows", "64", "--udp-max-answered", "65"],
            "--udp-max-answered must be between 0 and --udp-max-flows (64)"
        ),
        (minimal + ["--threads", "0"], "--threads must be between 1 and 1024"),
        (minimal + ["--threads", "1025"], "--threads must be between 1 and 1024"),
        (minimal + ["--bulk-after", "-1"], "--bulk-after must be between 0 and 1099511627776 bytes"),
        (minimal + ["--bulk-loops", "1025"], "--bulk-loops must be between 0 and 1024"),
        (minimal + ["--bulk-nice", "20"], "--bulk-nice must be between 0 and 19"),
        (minimal + ["--bulk-nice", "-1"], "--bulk-nice must be between 0 and 19"),
        (minimal + ["--busy-poll", "1000001"], "--busy-poll must be between 0 and 1000000 microseconds"),
        (minimal + ["--pipe-size", "4095"], "--pipe-size must be at least 4096 bytes"),
        (minimal + ["--pipe-size", "3000000000"], "--pipe-size must be at most 1073741824 bytes (1 GiB)"),
        (minimal + ["--connect-timeout", "0", "--threads", "0"], "--connect-timeout must be more than 0 seconds"),
        (["-p", "80", "localhost"], #"target IP "localhost" is not an IPv4 or IPv6 address"#),
        (["-p", "80", "[::1]"], #"target IP "[::1]" is not an IPv4 or IPv6 address"#),
        (["-p", "80", "300.1.1.1"], #"target IP "300.1.1.1" is not an IPv4 or IPv6 address"#),
        (["localhost"], "nothing to publish: give at least one -p"),
    ]

    @Test(arguments: errors)
    func rejects(args: [String], message: String) {
        #expect(failure(args) == message)
    }

    @Test(arguments: errors)
    func messageIsOneLine(args: [String], message: String) {
        #expect(!message.contains("\n"))
    }

    @Test func bounds() throws {
        let edges = [
            "--connect-timeout", "1000000000", "--udp-max-flows", "1", "--threads", "1024", "--busy-poll", "1000000",
            "--pipe-size", "4096", "--nft-table", String(repeating: "t", count: 64),
        ]
        let parsed = try arguments(minimal + edges)
        #expect(parsed?.connectTimeout == 1_000_000_000)
        #expect(parsed?.udpMaxFlows == 1)
        #expect(parsed?.threads == 1024)
        #expect(parsed?.busyPoll == 1_000_000)
        #expect(parsed?.pipeSize == 4096)
        #expect(try arguments(minimal + ["--udp-max-flows", "1000000", "--threads", "1"])?.udpMaxFlows == 1_000_000)
    }

    @Test func descriptionIsTheMessage() {
        #expect(RunArgumentError("missing value for -p").description == "missing value for -p")
        #expect(throws: RunArgumentError(#"unknown option "-x""#)) { try RunArguments.parse(["-x"]) }
    }
}
