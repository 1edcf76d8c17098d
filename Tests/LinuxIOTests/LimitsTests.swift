import Glibc
import LinuxIO
import XCTest

final class LimitsTests: XCTestCase {
    func testRaiseOpenFilesLiftsTheSoftLimitToTheHardOne() throws {
        let original = try Limits.openFiles()
        defer { try? Limits.setOpenFiles(original) }
        XCTAssertLessThanOrEqual(original.soft, original.hard)
        guard original.hard != ResourceLimit.unlimited else {
            throw XCTSkip("the hard limit is unlimited, which the kernel will not take as a soft limit")
        }
        let lowered = ResourceLimit(soft: min(original.hard, 256), hard: original.hard)
        try Limits.setOpenFiles(lowered)
        XCTAssertEqual(try Limits.openFiles(), lowered)
        XCTAssertEqual(try Limits.raiseOpenFiles(), ResourceLimit(soft: original.hard, hard: original.hard))
        XCTAssertEqual(try Limits.openFiles().soft, original.hard)
        // Already at the hard limit: nothing to do.
        XCTAssertEqual(try Limits.raiseOpenFiles(), ResourceLimit(soft: original.hard, hard: original.hard))
    }

    func testSetOpenFilesAboveTheHardLimitNamesTheCall() throws {
        let original = try Limits.openFiles()
        guard original.hard != ResourceLimit.unlimited, getuid() != 0 else {
            throw XCTSkip("root may raise its hard limit")
        }
        XCTAssertThrowsError(try Limits.setOpenFiles(ResourceLimit(soft: original.hard + 1, hard: original.hard + 1))) {
            XCTAssertTrue("\($0)".hasPrefix("setrlimit: "), "\($0)")
        }
    }
}
