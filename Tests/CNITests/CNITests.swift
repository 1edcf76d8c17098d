import Control
import JSON
import Mappings
import Netfilter
import XCTest

@testable import CNI

final class CNITests: XCTestCase {
    private let prevResult = """
        {"cniVersion":"1.0.0","interfaces":[{"name":"cnibr0","mac":"aa:bb:cc:dd:ee:ff"},\
        {"name":"veth1","mac":"aa:bb:cc:dd:ee:fe"},\
        {"name":"eth0","mac":"aa:bb:cc:dd:ee:01","sandbox":"/var/run/netns/ctrA"}],\
        "ips":[{"address":"198.18.1.1/24","interface":0},{"address":"198.18.1.2/24","gateway":"198.18.1.1","interface":2},\
        {"address":"fd00:b:0:1::2/64","interface":2}],"dns":{}}
        """

    private func config(_ extra: String = "", version: String = "1.0.0", prev: Bool = true) -> [UInt8] {
        let previous = prev ? ",\"prevResult\":\(prevResult)" : ""
        return Array(
            "{\"cniVersion\":\"\(version)\",\"name\":\"berthnet\",\"type\":\"berth-cni\"\(extra)\(previous)}".utf8
        )
    }

    private func run(_ command: CNICommand, _ stdin: [UInt8]) -> Result<PluginOutput, CNIError> {
        Plugin.run(
            CNIEnvironment(command: command, containerID: "ctrA", netns: "/var/run/netns/ctrA", ifname: "eth0"),
            stdin: stdin
        )
    }

    private func failure(_ result: Result<PluginOutput, CNIError>) -> CNIError? {
        if case .failure(let error) = result { return error }
        return nil
    }

    // MARK: environment

    func testMissingOrUnknownCommandIsCode4NamingTheVariable() {
        XCTAssertThrowsError(try CNIEnvironment.read { _ in nil }) {
            XCTAssertEqual(($0 as? CNIError)?.code, 4)
            XCTAssertEqual(($0 as? CNIError)?.msg, "CNI_COMMAND is not set")
        }
        XCTAssertThrowsError(try CNIEnvironment.read { $0 == "CNI_COMMAND" ? "UP" : nil }) {
            XCTAssertEqual(
                ($0 as? CNIError)?.msg,
                "CNI_COMMAND \"UP\" is not one of ADD, DEL, CHECK, STATUS, GC, VERSION"
            )
        }
    }

    func testContainerIDFollowsTheSpecsRule() throws {
        let env = ["CNI_COMMAND": "ADD", "CNI_CONTAINERID": "-bad", "CNI_IFNAME": "eth0", "CNI_NETNS": "/x"]
        XCTAssertThrowsError(try CNIEnvironment.read { env[$0] }) {
            XCTAssertEqual(($0 as? CNIError)?.code, 4)
            XCTAssertTrue(($0 as? CNIError)?.msg.hasPrefix("CNI_CONTAINERID \"-bad\"") == true, "\($0)")
        }
        var good = env
        good["CNI_CONTAINERID"] = "a1b2_c.d-e"
        XCTAssertEqual(try CNIEnvironment.read { good[$0] }.containerID, "a1b2_c.d-e")
        // DEL may come after the namespace is gone.
        good["CNI_COMMAND"] = "DEL"
        good["CNI_NETNS"] = nil
        XCTAssertEqual(try CNIEnvironment.read { good[$0] }.command, .del)
        // GC, STATUS and VERSION carry no attachment.
        XCTAssertEqual(try CNIEnvironment.read { $0 == "CNI_COMMAND" ? "GC" : nil }.command, .gc)
    }

    // MARK: configuration

    func testVersionIsCheckedFirst() {
        XCTAssertEqual(failure(run(.add, config(version: "0.2.0")))?.code, 1)
        XCTAssertEqual(failure(run(.add, Array("{not json".utf8)))?.code, 6)
    }

    func testPortMappingsAreReadAsTheConventionSaysAndBadOnesNamed() throws {
        let parsed = try PluginConfig.parse(
            config(
                #","runtimeConfig":{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"},"#
                    + #"{"hostPort":53,"containerPort":53,"protocol":"UDP","hostIP":"::1"},{"hostPort":81,"containerPort":80}]}"#
            )
        )
        XCTAssertEqual(
            parsed.portMappings,
            [
                PortMapEntry(hostPort: 8080, containerPort: 80, proto: .tcp),
                PortMapEntry(hostPort: 53, containerPort: 53, proto: .udp, hostIP: IPAddress("::1")),
                PortMapEntry(hostPort: 81, containerPort: 80, proto: .tcp),
            ]
        )
        XCTAssertEqual(parsed.portMappings.map(\.spec), ["8080:80/tcp", "[::1]:53:53/udp", "81:80/tcp"])
        XCTAssertEqual(parsed.control, PluginConfig.defaultControl)
        XCTAssertEqual(parsed.table, "berth_cni")

        let zero = failure(run(.add, config(#","runtimeConfig":{"portMappings":[{"hostPort":0,"containerPort":80}]}"#)))
        XCTAssertEqual(zero?.code, 7)
        XCTAssertEqual(
            zero?.msg,
            #"hostPort must be a port number from 1 to 65535 in {"hostPort":0,"containerPort":80}"#
        )
        let sctp = failure(
            run(
                .add,
                config(#","runtimeConfig":{"portMappings":[{"hostPort":1,"containerPort":1,"protocol":"sctp"}]}"#)
            )
        )
        XCTAssertEqual(sctp?.msg, "protocol \"sctp\" is not published by berth")
        let host = failure(
            run(
                .add,
                config(#","runtimeConfig":{"portMappings":[{"hostPort":1,"containerPort":1,"hostIP":"300.1.1.1"}]}"#)
            )
        )
        XCTAssertEqual(host?.msg, "hostIP \"300.1.1.1\" is not an IP address")
        XCTAssertEqual(failure(run(.add, config(#","table":"no spaces""#)))?.code, 7)
        XCTAssertEqual(failure(run(.add, config(#","control":"relative.sock""#)))?.code, 7)
    }

    func testContainerAddressesComeFromTheSandboxInterfaceNamedIfname() throws {
        let parsed = try PluginConfig.parse(config())
        let addresses = try parsed.containerAddresses(ifname: "eth0")
        XCTAssertEqual(addresses.v4, IPAddress("198.18.1.2"), "the bridge's own 198.18.1.1 is on the host")
        XCTAssertEqual(addresses.v6, IPAddress("fd00:b:0:1::2"))
        XCTAssertNil(try parsed.containerAddresses(ifname: "eth1").v4)
    }

    // MARK: operations that need neither a daemon nor nftables

    func testAddWithoutMappingsPassesPrevResultThrough() throws {
        guard case .success(let output) = run(.add, config(version: "1.0.0")) else { return XCTFail("ADD failed") }
        let expected = try JSONValue.parse(Array(prevResult.utf8)).get()
        XCTAssertEqual(try JSONValue.parse(Array((output.stdout ?? "").utf8)).get(), expected)
    }

    func testAddOutsideAChainIsRefused() {
        let error = failure(
            run(.add, config(#","runtimeConfig":{"portMappings":[{"hostPort":1,"containerPort":1}]}"#, prev: false))
        )
        XCTAssertEqual(error?.code, 7)
        XCTAssertTrue(error?.msg.contains("chained plugin") == true, "\(String(describing: error))")
    }

    func testAnOwnerTooLongForACommentIsRefusedAtAddAndNothingToDelete() {
        let long = CNIEnvironment(
            command: .add,
            containerID: String(repeating: "a", count: 120),
            netns: "/x",
            ifname: "eth0"
        )
        let mappings = #","runtimeConfig":{"portMappings":[{"hostPort":8080,"containerPort":80}]}"#
        guard case .failure(let error) = Plugin.run(long, stdin: config(mappings)) else { return XCTFail("ADD passed") }
        XCTAssertEqual(error.code, 7)
        XCTAssertEqual(error.msg, "network name, container id and interface name are too long together")
        var delete = long
        delete.command = .del
        guard case .success(let output) = Plugin.run(delete, stdin: config(mappings)) else {
            return XCTFail("DEL failed")
        }
        XCTAssertNil(output.stdout)
    }

    func testGCWithoutTheValidListRemovesNothing() {
        XCTAssertEqual(
            failure(run(.gc, config(version: "1.1.0", prev: false)))?.msg,
            "GC needs cni.dev/valid-attachments"
        )
    }

    func testVersionListsEverySupportedVersion() throws {
        guard
            case .success(let output) = Plugin.run(
                CNIEnvironment(command: .version),
                stdin: Array(#"{"cniVersion":"1.1.0"}"#.utf8)
            )
        else { return XCTFail("VERSION failed") }
        XCTAssertEqual(
            output.stdout,
            #"{"cniVersion":"1.1.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]}"#
        )
    }

    func testErrorsHaveTheSpecsShape() {
        let error = CNIError(100, "host port 8080/tcp is taken", details: "by someone")
        XCTAssertEqual(
            error.json(cniVersion: "1.0.0").serialized(),
            #"{"cniVersion":"1.0.0","code":100,"msg":"host port 8080/tcp is taken","details":"by someone"}"#
        )
    }

    // MARK: reservation

    func testHostSidesClashAsBindWould() {
        let wild4 = DNATRule(
            proto: .tcp,
            hostIP: nil,
            family: .v4,
            hostPort: 8080,
            containerIP: IPAddress("198.18.1.2")!,
            containerPort: 80
        )
        let wild6 = DNATRule(
            proto: .tcp,
            hostIP: nil,
            family: .v6,
            hostPort: 8080,
            containerIP: IPAddress("fd00:b::2")!,
            containerPort: 80
        )
        let one = DNATRule(
            proto: .tcp,
            hostIP: IPAddress("198.18.0.1"),
            hostPort: 8080,
            containerIP: IPAddress("198.18.1.2")!,
            containerPort: 80
        )
        let all = PortMapEntry(hostPort: 8080, containerPort: 80, proto: .tcp)
        XCTAssertTrue(Call.clash(all, wild4))
        XCTAssertTrue(Call.clash(all, one), "all addresses include 198.18.0.1")
        XCTAssertTrue(
            Call.clash(
                PortMapEntry(hostPort: 8080, containerPort: 1, proto: .tcp, hostIP: IPAddress("198.18.0.1")),
                wild4
            )
        )
        XCTAssertFalse(
            Call.clash(
                PortMapEntry(hostPort: 8080, containerPort: 1, proto: .tcp, hostIP: IPAddress("fd00:b::1")),
                wild4
            )
        )
        XCTAssertTrue(
            Call.clash(
                PortMapEntry(hostPort: 8080, containerPort: 1, proto: .tcp, hostIP: IPAddress("fd00:b::1")),
                wild6
            )
        )
        XCTAssertFalse(
            Call.clash(PortMapEntry(hostPort: 8080, containerPort: 80, proto: .udp), wild4),
            "udp and tcp differ"
        )
        XCTAssertFalse(Call.clash(PortMapEntry(hostPort: 8081, containerPort: 80, proto: .tcp), wild4))
        XCTAssertFalse(
            Call.clash(
                PortMapEntry(hostPort: 8080, containerPort: 1, proto: .tcp, hostIP: IPAddress("198.18.0.9")),
                one
            )
        )
    }
}
