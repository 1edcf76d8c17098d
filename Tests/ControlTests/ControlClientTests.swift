import Control
import Glibc
import LinuxIO
import XCTest

final class ControlClientTests: XCTestCase {
    private func socketPath() -> String {
        "/tmp/berth-client-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).sock"
    }

    /// A daemon that takes the connection (the kernel's backlog) and never answers must not hang
    /// its client: berth port and berth-cni give up with one line.
    func testASilentDaemonIsAnErrorAfterTheTimeoutNotAHang() throws {
        let path = socketPath()
        let listener = try UnixSocket.listen(path: path)
        defer { try? FileSystem.remove(path) }
        XCTAssertThrowsError(try ControlClient.request("GET", "/v1/berth/ports", socketPath: path, timeoutSeconds: 1)) {
            XCTAssertEqual("\($0)", "the berth daemon on \(path) did not answer within 1 s")
        }
        listener.close()
    }

    func testNoDaemonIsOneLineNamingThePath() {
        let path = socketPath()
        XCTAssertFalse(ControlClient.answers(path))
        XCTAssertThrowsError(try ControlClient.request("GET", "/v1/info", socketPath: path)) {
            XCTAssertEqual("\($0)", "no berth daemon answers on \(path) (no such file or directory)")
        }
    }

    func testPercentEncodingKeepsOnlyUnreservedBytes() {
        XCTAssertEqual(
            ControlClient.percentEncoded("cni/net/a_b.c-d~e/eth0 x&y=é"),
            "cni%2Fnet%2Fa_b.c-d~e%2Feth0%20x%26y%3D%C3%A9"
        )
    }
}
