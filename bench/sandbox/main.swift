// Step spawn cost, printed, never asserted: the sandboxed spawn of /bin/true next to a plain posix_spawn of the
// same program and next to bubblewrap, in the same run; and lines per second read from a step.
// Run (as root, for namespaces and cgroups): swift run -c release bench-sandbox [spawns] [--limit-loop]
import Foundation
import JWT
import RuntimeWorker

let arguments = Array(CommandLine.arguments.dropFirst())
let count = Int(arguments.first { Int($0) != nil } ?? "") ?? 300
let dir = FileManager.default.temporaryDirectory.appendingPathComponent("bench-sandbox-\(getpid())").path
try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
defer { try? FileManager.default.removeItem(atPath: dir) }

func micros(_ d: Duration) -> Double { Double(d.components.seconds) * 1e6 + Double(d.components.attoseconds) / 1e12 }

func stats(_ name: String, _ samples: [Double]) -> Double {
    let s = samples.sorted()
    let median = s[s.count / 2], p99 = s[min(s.count - 1, s.count * 99 / 100)]
    print(name.padding(toLength: 34, withPad: " ", startingAt: 0)
        + String(format: "median %8.0f µs   p99 %8.0f µs   %7.0f /s one at a time", median, p99, 1e6 / median))
    return median
}

func spawnWait(_ argv: [String]) -> Bool {
    var pid: pid_t = 0
    let cArgs = argv.map { strdup($0) } + [nil]
    defer { cArgs.forEach { free($0) } }
    guard posix_spawn(&pid, argv[0], nil, nil, cArgs, environ) == 0 else { return false }
    var status: Int32 = 0
    waitpid(pid, &status, 0)
    return status == 0
}

func cpuMicros() -> Double {
    var self_ = rusage(), children = rusage()
    getrusage(RUSAGE_SELF.rawValue, &self_)
    getrusage(RUSAGE_CHILDREN.rawValue, &children)
    func us(_ t: timeval) -> Double { Double(t.tv_sec) * 1e6 + Double(t.tv_usec) }
    return us(self_.ru_utime) + us(self_.ru_stime) + us(children.ru_utime) + us(children.ru_stime)
}

func measure(_ n: Int, _ body: () async throws -> Void) async rethrows -> [Double] {
    var samples: [Double] = []
    for _ in 0..<n {
        let t = ContinuousClock.now
        try await body()
        samples.append(micros(ContinuousClock.now - t))
    }
    return samples
}

// `bench-sandbox --limit-loop N`: the limit loop of the end-to-end benchmark. Each iteration is the work one
// attempt needs and nothing else: the sandboxed spawn of /bin/true (namespaces, cgroups, its output read) and one
// RS256 attempt token signed, with one loop per core and no Lightning, sockets or database. Prints iterations/s.
if arguments.contains("--limit-loop") {
    let key = try JWTKey.rsa(pem: try RSAKeyPair.generate().privateKeyPEM)
    let limitRunner = try SandboxRunner(mode: .namespaces, stateDirectory: dir)
    let work = dir + "/limit-work", tmp = dir + "/limit-tmp"
    for d in [work, tmp] { try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true) }
    let launch = StepLaunch(executable: "/bin/true", arguments: ["true"], environment: [:], workDirectory: work, tmpDirectory: tmp)
    let loops = ProcessInfo.processInfo.activeProcessorCount
    let t0 = ContinuousClock.now
    try await withThrowingTaskGroup(of: Void.self) { group in
        for i in 0..<loops {
            let share = count / loops + (i < count % loops ? 1 : 0)
            group.addTask {
                for _ in 0..<share {
                    _ = try JWT.sign(AttemptTokenClaims(attemptID: UUID().uuidString, lifetime: 60), key: key)
                    let t = try await limitRunner.run(launch) { _ in }
                    precondition(t.exitCode == 0, "the limit loop's step failed: \(t)")
                }
            }
        }
        try await group.waitForAll()
    }
    let seconds = micros(ContinuousClock.now - t0) / 1e6
    print(String(format: "limit loop: %.1f iterations/s (%d iterations, %d loops, %.2f s)", Double(count) / seconds, count, loops, seconds))
    exit(0)
}

// `bench-sandbox N --sandboxed-only`: nothing but N sandboxed spawns, one at a time, for `perf record` (see
// docs/benchmarks.md); prints the median.
let runner = try SandboxRunner(mode: .namespaces, stateDirectory: dir)
let work = dir + "/work", tmp = dir + "/tmp"
try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
try FileManager.default.createDirectory(atPath: tmp, withIntermediateDirectories: true)
let launch = StepLaunch(executable: "/bin/true", arguments: ["true"], environment: [:], workDirectory: work, tmpDirectory: tmp)

if arguments.contains("--sandboxed-only") {
    _ = stats("sandboxed (namespaces, cgroups)", try await measure(count) { _ = try await runner.run(launch) { _ in } })
    let mounts = Counter()
    let cat = StepLaunch(executable: "/bin/cat", arguments: ["cat", "/proc/self/mountinfo"], environment: [:], workDirectory: work,
                         tmpDirectory: tmp)
    _ = try await runner.run(cat) { batch in
        mounts.add(batch.count)
        if arguments.contains("--print-mounts") { batch.forEach { print("  " + $0.1) } }
    }
    print("a step's mount namespace holds \(mounts.value) mounts (--print-mounts lists them)")
    exit(0)
}

print("Step spawn, \(count) runs each\n")

// The plain spawn, the sandboxed one and its baseline (each step copies the host's mounts) measured in turn, one
// of each per round: the machine's drift falls on all three alike.
let hostMounts = try SandboxRunner(mode: .namespaces, stateDirectory: dir)
hostMounts.skipViewNamespace = true
var samples: [[Double]] = [[], [], []], cpu = [0.0, 0.0, 0.0]
for i in 0..<(3 * count) {
    let t = ContinuousClock.now, c = cpuMicros()
    switch i % 3 {
    case 0: _ = spawnWait(["/bin/true"])
    case 1: _ = try await runner.run(launch) { _ in }
    default: _ = try await hostMounts.run(launch) { _ in }
    }
    cpu[i % 3] += cpuMicros() - c
    samples[i % 3].append(micros(ContinuousClock.now - t))
}
let plain = stats("plain posix_spawn /bin/true", samples[0])
let sandboxed = stats("sandboxed (namespaces, cgroups)", samples[1])
let hostCopied = stats("sandboxed, host's mounts copied", samples[2])
let perStep = try SandboxRunner(mode: .namespaces, stateDirectory: dir)
perStep.buildRootPerStep = true
let builtPerStep = stats("sandboxed, view built per step", try await measure(count) { _ = try await perStep.run(launch) { _ in } })
let noneRunner = try SandboxRunner(mode: .none, stateDirectory: dir)
let unsandboxed = stats("runner with --sandbox none", try await measure(count) { _ = try await noneRunner.run(launch) { _ in } })

var bwrap: Double?
if FileManager.default.isExecutableFile(atPath: "/usr/bin/bwrap") {
    bwrap = stats("bubblewrap --unshare-all", await measure(max(20, count / 5)) {
        _ = spawnWait(["/usr/bin/bwrap", "--unshare-all", "--ro-bind", "/usr", "/usr", "--symlink", "usr/bin", "/bin",
                       "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64", "--proc", "/proc", "--dev", "/dev",
                       "--die-with-parent", "/bin/true"])
    })
} else {
    print("bubblewrap: not installed (apt-get install bubblewrap)")
}
print(String(format: "\nsandboxed / plain spawn: %.2f× the time, %.2f× the CPU   (aim ≤ 1.5×; in turn)", sandboxed / plain, cpu[1] / cpu[0]))
print(String(format: "--sandbox none / plain:  %.2f×", unsandboxed / plain))
print(String(format: "view built per step / prepared once: %.2f×", builtPerStep / sandboxed))
print(String(format: "host's mounts copied / view namespace: %.2f× the time, %.2f× the CPU (%.0f µs vs %.0f µs, children included; in turn)",
             hostCopied / sandboxed, cpu[2] / cpu[1], cpu[2] / Double(count), cpu[1] / Double(count)))
if let bwrap { print(String(format: "bubblewrap / sandboxed:  %.2f×   (aim ≥ 4×)", bwrap / sandboxed)) }

// The same spawn from a process with a worker-sized heap (threads and 256 MB touched, as a busy worker has): the
// clone shares the address space (CLONE_VM) instead of copying its page tables, which the first version did.
var ballast = [UInt8](repeating: 1, count: 256 << 20)
for i in stride(from: 0, to: ballast.count, by: 4096) { ballast[i] = UInt8(i & 0xff) }
let busy = (0..<8).map { _ in Thread { while true { sleep(60) } } }
busy.forEach { $0.start() }
print("\nWith a 256 MB heap and 8 more threads in the spawning process:")
let shareCPU0 = cpuMicros()
let shared = stats("sandboxed, CLONE_VM (now)", try await measure(count) { _ = try await runner.run(launch) { _ in } })
let shareCPU = (cpuMicros() - shareCPU0) / Double(count)
let copier = try SandboxRunner(mode: .namespaces, stateDirectory: dir)
copier.copyAddressSpace = true
let copyCPU0 = cpuMicros()
let copied = stats("sandboxed, page tables copied", try await measure(count) { _ = try await copier.run(launch) { _ in } })
let copyCPU = (cpuMicros() - copyCPU0) / Double(count)
print(String(format: "copied / CLONE_VM: %.2f× the time, %.2f× the CPU (%.0f µs vs %.0f µs of CPU per spawn, children included)",
             copied / shared, copyCPU / shareCPU, copyCPU, shareCPU))
print(String(format: "sandboxed with the heap / plain spawn: %.2f×", shared / plain))
_ = ballast.count

// Lines per second from a step's stdout into the worker.
let lines = 2_000_000
let counted = Counter()
let seqLaunch = StepLaunch(executable: "/usr/bin/seq", arguments: ["seq", "\(lines)"], environment: [:], workDirectory: work,
                           tmpDirectory: tmp)
let t0 = ContinuousClock.now
_ = try await runner.run(seqLaunch) { batch in counted.add(batch.count) }
let seconds = micros(ContinuousClock.now - t0) / 1e6
print(String(format: "\nlines from a step: %.0f lines/s (%d lines in %.2f s)", Double(counted.value) / seconds, counted.value, seconds))

final class Counter: @unchecked Sendable {
    private let lock = NSLock()
    private var n = 0
    func add(_ k: Int) { lock.withLock { n += k } }
    var value: Int { lock.withLock { n } }
}
