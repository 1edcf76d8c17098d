import Glibc
import LinuxIO
import XCTest

final class MemoryTests: XCTestCase {
    /// Pages of `start..<start+length` mapped into this process, from /proc/self/pagemap's
    /// "present" bit (readable without privileges for one's own process).
    private func presentPages(start: UInt, length: Int) throws -> Int {
        let page = UInt(sysconf(Int32(_SC_PAGESIZE)))
        let fd = open("/proc/self/pagemap", O_RDONLY)
        guard fd >= 0 else { throw XCTSkip("/proc/self/pagemap cannot be read here") }
        defer { close(fd) }
        var present = 0
        var entry: UInt64 = 0
        for index in 0..<(UInt(length) / page) {
            let offset = off_t((start / page + index) * 8)
            XCTAssertEqual(pread(fd, &entry, 8, offset), 8)
            if entry >> 63 == 1 { present += 1 }
        }
        return present
    }

    func testTheRelocationTableLeavesTheProcessAndTheProgramGoesOn() throws {
        // The test runner is a PIE program with a relocation table, as berth is.
        let pages = try XCTUnwrap(Memory.relocationTablePages(), "no relocation table found in the test binary")
        XCTAssertGreaterThan(pages.length, 0)
        let before = try presentPages(start: pages.start, length: pages.length)
        XCTAssertEqual(Memory.releaseRelocationTable(), pages.length)
        XCTAssertEqual(try presentPages(start: pages.start, length: pages.length), 0, "\(before) pages before")
        // Calls through the PLT and dlopen still work: ld.so needs none of the released pages.
        XCTAssertNotNil(dlopen("libm.so.6", RTLD_NOW))
        XCTAssertEqual(String(cString: strerror(ENOENT)), "No such file or directory")
    }
}
