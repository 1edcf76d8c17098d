import Glibc
import LinuxIO
import Logging
import Mappings
import Netfilter
import Publishing
import Relay

/// `berth run`: publish ports of one container address until SIGINT or SIGTERM.
enum Run {
    /// The exit code: 0 after SIGINT/SIGTERM, 1 for a failed start, 2 for a bad command line.
    static func main(_ args: [String]) -> Int32 {
        let arguments: RunArguments
        do {
            switch try RunArguments.parse(args) {
            case .help:
                say(RunArguments.help, newline: false)
                return 0
            case .version:
                say(berthVersion)
                return 0
            case .run(let parsed):
                arguments = parsed
            }
        } catch {
            complain(error.description)
            return 2
        }
        // Blocked before any port is reported, so a SIGTERM right after the report is not lost
        // (the loop's signalfd picks it up once it runs).
        EventLoop.blockSignals([SIGINT, SIGTERM])
        // RunArguments lets only swift-log's level names through.
        bootstrapLogging(Logger.Level(rawValue: arguments.logLevel)!)
        var mappings: [PortMapping] = []
        for text in arguments.specs {
            do {
                mappings += try PortSpec(parsing: text).mappings(to: arguments.target)
            } catch {
                complain("\(error)")
                return 2
            }
        }
        var options = PublishOptions()
        var automatic = false
        if let mode = arguments.mode {
            if mode != .userspace && !Capability.hasNetAdmin() {
                complain("--mode \(mode) needs CAP_NET_ADMIN to program nftables (run as root, or use --mode userspace)")
                return 1
            }
            options.mode = mode
        } else {
            let (picked, notice) = Mode.automatic()
            if let notice { complain("notice: \(notice)") }
            options.mode = picked
            automatic = true
        }
        options.tableName = arguments.nftTable
        options.threads = arguments.threads ?? usableCPUs()
        options.relay.connectTimeout = .seconds(arguments.connectTimeout)
        options.relay.halfCloseTimeout = .seconds(arguments.halfCloseTimeout)
        options.relay.pipeSize = arguments.pipeSize
        options.busyPoll = .microseconds(arguments.busyPoll)
        options.relay.udpTimeout = .seconds(arguments.udpTimeout)
        options.relay.udpMaxFlows = arguments.udpMaxFlows
        var publisher = Publisher(options: options, logger: Logger(label: "berth"))
        do {
            let ports: [BoundPort]
            do {
                ports = try publisher.bind(mappings)
            } catch where error.isKernelPathFailure && automatic {
                complain("notice: no kernel fast path (\(error)): forwarding in userspace only")
                options.mode = .userspace
                publisher = Publisher(options: options, logger: Logger(label: "berth"))
                ports = try publisher.bind(mappings)
            }
            for port in ports { say(port.line) }
            try publisher.run()
            publisher.close()
        } catch {
            complain("\(error)")
            return 1
        }
        return 0
    }
}
