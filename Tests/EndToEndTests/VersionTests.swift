// One version everywhere (Mappings' BerthVersion): every way of asking the built binaries for it
// answers the same line, and berth-cni's VERSION answer stays what the CNI spec says it is.

import Control
import Glibc
import LinuxIO
import Mappings
import TestSupport
import XCTest

final class VersionTests: XCTestCase {
    private var berthCNI: String {
        var path = berthBinary()
        path.removeLast("berth".count)
        return path + "berth-cni"
    }

    func testTheLineHasTheNumberAndTheCommitOfACheckout() throws {
        let line = BerthVersion.line()
        XCTAssertTrue(line.hasPrefix("berth \(BerthVersion.number)"), line)
        let rest = line.dropFirst("berth \(BerthVersion.number)".count)
        // The package these tests are in: Tests/EndToEndTests/VersionTests.swift is three levels down.
        let package = String(#filePath.split(separator: "/").dropLast(3).joined(separator: "/"))
        guard access("/" + package + "/.git", F_OK) == 0 else { return XCTAssertEqual(rest, "", line) }
        // Built from a git checkout: " (git 0123456789ab)".
        XCTAssertTrue(rest.hasPrefix(" (git ") && rest.hasSuffix(")"), line)
        let commit = rest.dropFirst(" (git ".count).dropLast()
        XCTAssertTrue(commit.count == 12 && commit.allSatisfy(\.isHexDigit), line)
    }

    func testEveryCommandPrintsTheOneVersion() throws {
        let line = BerthVersion.line()
        for arguments in [["--version"], ["run", "--version"], ["daemon", "--version"], ["-v"], ["-version"]] {
            let result = try Subprocess.run(berthBinary(), arguments)
            XCTAssertEqual(result.code, 0, "\(arguments)")
            XCTAssertEqual(result.stdout, line + "\n", "\(arguments)")
            XCTAssertEqual(result.stderr, "", "\(arguments)")
        }
        let cni = try Subprocess.run(berthCNI, ["--version"])
        XCTAssertEqual(cni.code, 0)
        XCTAssertEqual(
            cni.stdout,
            BerthVersion.line("berth-cni") + "\nCNI protocol versions supported: 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0\n"
        )
    }

    /// SPEC.md defines VERSION's output as cniVersion and supportedVersions alone: berth's own
    /// version is `berth-cni --version`'s, never in the JSON a runtime parses.
    func testCNIVersionAnswersTheSpecsJSON() throws {
        let cni = try Subprocess(berthCNI, [], environment: ["CNI_COMMAND=VERSION"])
        XCTAssertEqual(cni.waitForExit(), 0, cni.stderr)
        XCTAssertEqual(
            cni.stdout,
            #"{"cniVersion":"1.1.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]}"# + "\n"
        )
        XCTAssertEqual(cni.stderr, "")
    }

    func testTheControlAPIReportsTheOneVersion() throws {
        let directory = String(cString: mkdtemp(strdup("/tmp/berth-version-XXXXXX")))
        let socketPath = directory + "/berth.sock"
        defer {
            unlink(socketPath)
            rmdir(directory)
        }
        let daemon = try Subprocess(berthBinary(), ["daemon", "--mode", "userspace", "--control", socketPath])
        XCTAssertEqual(daemon.waitForLines(1), ["control \(socketPath)"], daemon.stderr)
        let info = try ControlClient.request("GET", "/v1/info", socketPath: socketPath)
        XCTAssertEqual(info.status, 200)
        XCTAssertEqual(info.body?[member: "version"], .string(BerthVersion.line()))
        daemon.signal(SIGTERM)
        XCTAssertEqual(daemon.waitForExit(), 0)
    }
}
