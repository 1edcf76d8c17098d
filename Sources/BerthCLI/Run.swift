import Glibc
import LinuxIO
import Logging
import Mappings
import Publishing

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
        bootstrapLogging(Logger.Level(rawValue: arguments.logLevel) ?? .notice)
        var mappings: [PortMapping] = []
        for text in arguments.specs {
            do {
                mappings += try PortSpec(parsing: text).mappings(to: arguments.target)
            } catch {
                complain("\(error)")
                return 2
            }
        }
        let options = Self.options(arguments)
        do {
            let publisher = try Publisher.start(
                mappings, mode: arguments.mode, options: options, logger: Logger(label: "berth"), notice: complain)
            for port in publisher.ports { say(port.line) }
            try publisher.run()
            publisher.close()
        } catch {
            complain("\(error)")
            return 1
        }
        return 0
    }

    /// The publishing options `berth run`'s command line asks for (the daemon's too).
    static func options(_ arguments: RunArguments) -> PublishOptions {
        var options = PublishOptions()
        options.tableName = arguments.nftTable
        options.threads = arguments.threads ?? usableCPUs()
        options.relay.connectTimeout = .seconds(arguments.connectTimeout)
        options.relay.halfCloseTimeout = .seconds(arguments.halfCloseTimeout)
        options.relay.pipeSize = arguments.pipeSize
        options.busyPoll = .microseconds(arguments.busyPoll)
        options.relay.udpTimeout = .seconds(arguments.udpTimeout)
        options.relay.udpMaxFlows = arguments.udpMaxFlows
        options.relay.proxyProtocol = arguments.proxyProtocol
        options.relay.proxyProtocolUDP = arguments.proxyProtocolUDP
        return options
    }
}
