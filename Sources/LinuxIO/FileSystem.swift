// Paths the control socket lives among: what is at a path (without following links), directories
// made with an exact mode, groups, small files of /proc.

import CBerthLinux
import Glibc

/// Files and directories the control socket lives among.
public enum FileSystem {
    /// What is at a path, the path itself (a link is a link, not what it points to).
    package enum Kind: Sendable, Equatable {
        case socket
        case directory
        case link
        case other
    }

    /// lstat(2): nil when nothing is there.
    package static func kind(_ path: String) throws(SyscallError) -> Kind? {
        var info = stat()
        if lstat(path, &info) != 0 {
            if errno == ENOENT { return nil }
            throw SyscallError("lstat", .init(rawValue: errno), subject: path)
        }
        switch info.st_mode & S_IFMT {
        case S_IFSOCK: return .socket
        case S_IFDIR: return .directory
        case S_IFLNK: return .link
        default: return .other
        }
    }

    /// Owner and mode of a directory, following links (`/var/run` is one).
    package struct DirectoryInfo: Sendable, Equatable {
        package let uid: uid_t
        package let mode: mode_t
        /// Others (not its owner or group) may create and remove entries in it.
        package var othersMayWrite: Bool { mode & S_IWOTH != 0 }
    }

    package static func directoryInfo(_ path: String) throws(SyscallError) -> DirectoryInfo {
        var info = stat()
        if stat(path, &info) != 0 { throw SyscallError("stat", .init(rawValue: errno), subject: path) }
        guard info.st_mode & S_IFMT == S_IFDIR else { throw SyscallError("stat", .notDirectory, subject: path) }
        return DirectoryInfo(uid: info.st_uid, mode: info.st_mode & 0o7777)
    }

    /// Makes directory `path` with exactly `mode` (and `group`, if given), whatever the umask:
    /// set through a descriptor opened without following links. False if it was there already
    /// (and then it is left as it is).
    @discardableResult
    package static func makeDirectory(
        _ path: String,
        exactMode mode: mode_t,
        group: gid_t?
    ) throws(SyscallError)
        -> Bool
    {
        if mkdir(path, 0o700) != 0 {
            if errno == EEXIST { return false }
            throw SyscallError("mkdir", .init(rawValue: errno), subject: path)
        }
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        if fd < 0 { throw SyscallError("open", .init(rawValue: errno), subject: path) }
        let directory = Descriptor(taking: fd)
        do {
            if let group { _ = try syscall("fchown") { fchown(directory.raw, uid_t.max, group) } }
            _ = try syscall("fchmod") { fchmod(directory.raw, mode) }
        } catch {
            throw error.about(path)
        }
        return true
    }

    /// chown(2) of the group of `path` itself, never of what a link there points to.
    package static func setGroupOfLink(_ path: String, _ gid: gid_t) throws(SyscallError) {
        do { _ = try syscall("chown") { fchownat(AT_FDCWD, path, uid_t.max, gid, AT_SYMLINK_NOFOLLOW) } } catch {
            throw error.about(path)
        }
    }

    package static func makeDirectory(_ path: String, mode: mode_t) throws(SyscallError) {
        if mkdir(path, mode) != 0 && errno != EEXIST {
            throw SyscallError("mkdir", .init(rawValue: errno), subject: path)
        }
    }

    package static func remove(_ path: String) throws(SyscallError) {
        if unlink(path) != 0 && errno != ENOENT { throw SyscallError("unlink", .init(rawValue: errno), subject: path) }
    }

    public static func exists(_ path: String) -> Bool { access(path, F_OK) == 0 }

    public static func setMode(_ path: String, _ mode: mode_t) throws(SyscallError) {
        _ = try syscall("chmod") { chmod(path, mode) }
    }

    package static func setGroup(_ path: String, _ gid: gid_t) throws(SyscallError) {
        _ = try syscall("chown") { chown(path, uid_t.max, gid) }
    }

    /// The numeric id of group `name`, or nil if there is none.
    package static func groupID(_ name: String) -> gid_t? {
        guard let entry = getgrnam(name) else { return nil }
        return entry.pointee.gr_gid
    }

    /// The supplementary groups of process `pid` (the `Groups:` line of /proc/PID/status).
    package static func groups(ofProcess pid: Int32) -> [gid_t] {
        guard let text = readSmallFile("/proc/\(pid)/status") else { return [] }
        for line in text.split(separator: "\n") where line.hasPrefix("Groups:") {
            return line.dropFirst("Groups:".count).split(whereSeparator: { $0 == " " || $0 == "\t" }).compactMap {
                gid_t($0)
            }
        }
        return []
    }

    /// A file of at most 64 KiB, whole; nil if it cannot be read.
    public static func readSmallFile(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        let file = Descriptor(taking: fd)
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while bytes.count < 1 << 16 {
            let got = chunk.withUnsafeMutableBytes { read(file.raw, $0.baseAddress, $0.count) }
            if got < 0 && errno == EINTR { continue }
            if got <= 0 { break }
            bytes += chunk[..<got]
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
