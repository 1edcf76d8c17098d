import CBerthLinux
import Glibc

/// What berth gives back of its own memory.
package enum Memory {
    /// Hands back the pages of the program's relocation table. ld.so reads the whole table once
    /// before `main` (640 KiB for berth, linked as PIE) and never again, yet the pages stay
    /// resident: MADV_DONTNEED drops them from this process. They are clean file pages, so a later
    /// read would fetch them again from the file; nothing reads them. Returns the bytes released
    /// (0 where there is no such table, as in a binary linked without PIE).
    @discardableResult
    package static func releaseRelocationTable() -> Int {
        guard let pages = relocationTablePages(),
            let address = UnsafeMutableRawPointer(bitPattern: pages.start),
            (try? syscall("madvise", { madvise(address, pages.length, MADV_DONTNEED) })) != nil
        else { return 0 }
        return pages.length
    }

    /// The whole pages of the relocation table: its neighbours (.rela.plt, code) share the others.
    package static func relocationTablePages() -> (start: UInt, length: Int)? {
        var start: UInt = 0
        var length = 0
        guard CBerthLinux_main_relocations(&start, &length) == 0 else { return nil }
        let page = UInt(sysconf(Int32(_SC_PAGESIZE)))
        let first = (start + page - 1) & ~(page - 1)
        let end = (start + UInt(length)) & ~(page - 1)
        return end > first ? (first, Int(end - first)) : nil
    }
}
