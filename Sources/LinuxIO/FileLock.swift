// An exclusive flock(2) on a file that root opens and creates: berth-cni's lock. Nothing on the way
// follows a link, and the directory must be one nobody else can change; otherwise whoever can write
// there makes root create or open any file (a link at the lock's name), or swaps the lock away.

import Glibc

/// Why the lock was not taken: a failed call, or something at the path that is refused.
package struct FileLockError: Error, Sendable, CustomStringConvertible {
    package let description: String

    init(_ description: String) { self.description = description }
    init(_ error: SyscallError) { self.description = error.description }
}

package enum FileLock {
    /// Takes an exclusive lock on `directory/name`, waiting for it; it lasts as long as the
    /// returned descriptor, and ends with the process too. `directory` is made (0755) if missing; it
    /// is refused when it is a link, not a directory, owned by another user than root or this one,
    /// or writable by group or others. The file is made (0600) if missing, never truncated, and
    /// refused when it is a link or not a regular file.
    package static func exclusive(_ name: String, in directory: String) throws(FileLockError) -> Descriptor {
        guard !name.isEmpty, name != ".", name != "..", !name.utf8.contains(UInt8(ascii: "/")) else {
            throw FileLockError("refusing lock name \"\(name)\": not a file name")
        }
        let path = directory.hasSuffix("/") ? directory + name : "\(directory)/\(name)"
        if mkdir(directory, 0o755) != 0 && errno != EEXIST {
            throw FileLockError(SyscallError("mkdir", .init(rawValue: errno), subject: directory))
        }
        let folder = try open(directory, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        let info = try status(folder.raw, directory)
        if info.st_uid != 0 && info.st_uid != geteuid() {
            throw FileLockError("refusing lock directory \(directory): owned by uid \(info.st_uid), not root")
        }
        if info.st_mode & 0o022 != 0 {
            throw FileLockError(
                "refusing lock directory \(directory): group or others may write it (mode \(octal(info.st_mode)))"
            )
        }
        let file = try open(
            path,
            O_RDWR | O_CREAT | O_NOFOLLOW | O_NOCTTY | O_NONBLOCK | O_CLOEXEC,
            at: folder.raw,
            name: name
        )
        folder.close()
        guard try status(file.raw, path).st_mode & S_IFMT == S_IFREG else {
            throw FileLockError("refusing \(path): not a regular file")
        }
        do {
            _ = try syscall("flock") { flock(file.raw, LOCK_EX) }
        } catch {
            throw FileLockError(error.about(path))
        }
        return file
    }

    /// open(2), or openat(2) of `name` in the directory `at`; a link is refused by name (ELOOP with
    /// O_NOFOLLOW), and so is a directory where a file is asked for.
    private static func open(
        _ path: String,
        _ flags: Int32,
        at folder: Int32? = nil,
        name: String = ""
    ) throws(FileLockError) -> Descriptor {
        while true {
            let raw = folder.map { Glibc.openat($0, name, flags, 0o600) } ?? Glibc.open(path, flags)
            if raw >= 0 { return Descriptor(taking: raw) }
            switch errno {
            case EINTR: continue
            case ELOOP:
                throw FileLockError("refusing \(folder == nil ? "lock directory " : "")\(path): it is a symbolic link")
            case ENOTDIR where folder == nil:
                // O_DIRECTORY answers a link with ENOTDIR too.
                var info = stat()
                let link = lstat(path, &info) == 0 && info.st_mode & S_IFMT == S_IFLNK
                throw FileLockError(
                    "refusing lock directory \(path): \(link ? "it is a symbolic link" : "not a directory")"
                )
            case EISDIR: throw FileLockError("refusing \(path): not a regular file")
            default: throw FileLockError(SyscallError("open", .init(rawValue: errno), subject: path))
            }
        }
    }

    private static func status(_ fd: Int32, _ path: String) throws(FileLockError) -> stat {
        var info = stat()
        do {
            _ = try syscall("fstat") { fstat(fd, &info) }
        } catch {
            throw FileLockError(error.about(path))
        }
        return info
    }

    private static func octal(_ mode: mode_t) -> String {
        let digits = String(mode & 0o7777, radix: 8)
        return String(repeating: "0", count: max(0, 4 - digits.count)) + digits
    }
}
