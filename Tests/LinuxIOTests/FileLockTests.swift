// berth-cni's lock, opened as root: nothing at the path that someone else could have planted is
// followed or used, and the lock excludes a second locker.

import Glibc
import LinuxIO
import TestSupport
import XCTest

final class FileLockTests: XCTestCase {
    private func refusal(_ name: String, in directory: String) -> String? {
        do {
            let lock = try FileLock.exclusive(name, in: directory)
            lock.close()
            return nil
        } catch {
            return error.description
        }
    }

    func testALinkAtTheLockPathIsRefusedAndItsTargetNotCreated() throws {
        let directory = try temporaryDirectory()
        XCTAssertEqual(symlink(directory + "/victim", directory + "/t.lock"), 0)
        XCTAssertEqual(
            refusal("t.lock", in: directory),
            "refusing \(directory)/t.lock: it is a symbolic link"
        )
        XCTAssertNotEqual(access(directory + "/victim", F_OK), 0, "root created the file the link points to")
        // A link to a file that exists: neither opened nor truncated.
        let victim = open(directory + "/victim", O_WRONLY | O_CREAT | O_CLOEXEC, 0o644)
        XCTAssertEqual(write(victim, "data", 4), 4)
        close(victim)
        XCTAssertNotNil(refusal("t.lock", in: directory))
        XCTAssertEqual(readFile(directory + "/victim"), "data")
    }

    func testALinkOrAFileForTheDirectoryIsRefused() throws {
        let real = try temporaryDirectory()
        let link = real + "-link"
        XCTAssertEqual(symlink(real, link), 0)
        defer { unlink(link) }
        XCTAssertEqual(refusal("t.lock", in: link), "refusing lock directory \(link): it is a symbolic link")
        XCTAssertNotEqual(access(real + "/t.lock", F_OK), 0)
        let file = real + "/plain"
        close(open(file, O_WRONLY | O_CREAT | O_CLOEXEC, 0o600))
        XCTAssertEqual(refusal("t.lock", in: file), "refusing lock directory \(file): not a directory")
    }

    func testADirectoryOthersMayWriteIsRefused() throws {
        let directory = try temporaryDirectory()
        for (mode, shown) in [(0o777 as mode_t, "0777"), (0o775, "0775"), (0o1733, "1733")] {
            XCTAssertEqual(chmod(directory, mode), 0)
            XCTAssertEqual(
                refusal("t.lock", in: directory),
                "refusing lock directory \(directory): group or others may write it (mode \(shown))"
            )
        }
        XCTAssertNotEqual(access(directory + "/t.lock", F_OK), 0)
    }

    func testADirectoryOfAnotherUserIsRefused() throws {
        guard isRoot else {
            print("FileLockTests: skipped: giving a directory to another user needs root")
            throw XCTSkip("giving a directory to another user needs root")
        }
        let directory = try temporaryDirectory()
        XCTAssertEqual(chown(directory, 65534, 65534), 0)
        XCTAssertEqual(
            refusal("t.lock", in: directory),
            "refusing lock directory \(directory): owned by uid 65534, not root"
        )
        XCTAssertNotEqual(access(directory + "/t.lock", F_OK), 0)
    }

    func testSomethingElseThanAFileAtTheLockPathIsRefused() throws {
        let directory = try temporaryDirectory()
        XCTAssertEqual(mkfifo(directory + "/fifo.lock", 0o600), 0)
        XCTAssertEqual(refusal("fifo.lock", in: directory), "refusing \(directory)/fifo.lock: not a regular file")
        XCTAssertEqual(mkdir(directory + "/dir.lock", 0o700), 0)
        XCTAssertEqual(refusal("dir.lock", in: directory), "refusing \(directory)/dir.lock: not a regular file")
        XCTAssertEqual(refusal("../t.lock", in: directory), "refusing lock name \"../t.lock\": not a file name")
    }

    func testTheLockIsMadeAndExcludesASecondLocker() throws {
        let directory = try temporaryDirectory() + "/locks"
        let lock = try FileLock.exclusive("t.lock", in: directory)
        var info = stat()
        XCTAssertEqual(stat(directory, &info), 0)
        XCTAssertEqual(info.st_mode & S_IFMT, S_IFDIR)
        XCTAssertEqual(info.st_mode & 0o022, 0, "the made directory is writable by group or others")
        XCTAssertEqual(stat(directory + "/t.lock", &info), 0)
        XCTAssertEqual(info.st_mode & 0o7777, 0o600)

        let other = open(directory + "/t.lock", O_RDONLY | O_CLOEXEC)
        XCTAssertGreaterThanOrEqual(other, 0)
        defer { close(other) }
        XCTAssertEqual(flock(other, LOCK_EX | LOCK_NB), -1)
        XCTAssertEqual(errno, EWOULDBLOCK)
        lock.close()
        XCTAssertEqual(flock(other, LOCK_EX | LOCK_NB), 0, "the lock ends with its descriptor")
        flock(other, LOCK_UN)
        // Taken again over the file that is there now.
        let again = try FileLock.exclusive("t.lock", in: directory)
        again.close()
    }
}
