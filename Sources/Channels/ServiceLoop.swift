internal import CLibWebSockets
import Foundation

/// A pthread mutex. (Synchronization.Mutex gave ThreadSanitizer false positives on Linux here.)
final class Lock: @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    init() { pthread_mutex_init(mutex, nil) }
    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }
    @inline(__always) func withLock<T>(_ body: () throws -> T) rethrows -> T {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body()
    }
}

/// Receives every lws callback of one context.
protocol LWSCallbackTarget: AnyObject {
    func callback(wsi: OpaquePointer?, reason: lws_callback_reasons, user: UnsafeMutableRawPointer?,
                  input: UnsafeMutableRawPointer?, length: Int) -> Int32
}

/// The one C callback: finds the owner through the context user pointer.
func lwsCallbackFunction(
    wsi: OpaquePointer?, reason: lws_callback_reasons, user: UnsafeMutableRawPointer?,
    input: UnsafeMutableRawPointer?, length: Int
) -> Int32 {
    guard let wsi, let context = lws_get_context(wsi), let owner = lws_context_user(context) else {
        return wsi.map { lws_callback_http_dummy($0, reason, user, input, length) } ?? 0
    }
    let target = Unmanaged<AnyObject>.fromOpaque(owner).takeUnretainedValue() as! LWSCallbackTarget
    return target.callback(wsi: wsi, reason: reason, user: user, input: input, length: length)
}

/// One lws context and the one thread that services it (this lws build has LWS_MAX_SMP 1).
///
/// Every lws call except `lws_cancel_service` happens on the service thread. Other threads `post` closures
/// into a locked inbox and wake the thread; it drains the whole inbox in `LWS_CALLBACK_EVENT_WAIT_CANCELLED`.
final class ServiceLoop: @unchecked Sendable {
    private let lock = Lock()
    private var inbox: [() -> Void] = []
    private var stopping = false
    /// The service thread has ended (stopped, or lws failed): nothing posted from now on would run.
    private var ended = false
    private var context: OpaquePointer?
    private let finished = DispatchSemaphore(value: 0)
    private let name: String
    /// The service thread, once it runs.
    private var thread: pthread_t?

    init(name: String) { self.name = name }

    /// Creates the context on the calling thread (before the service thread exists) and starts servicing.
    func start(_ create: () -> OpaquePointer?) throws {
        guard let ctx = create() else { throw ChannelError.startFailed("lws_create_context failed (port in use?)") }
        context = ctx
        let thread = Thread { [self, name] in
            nameCurrentThread(name)
            SocketServiceThread.mark()
            lock.withLock { self.thread = pthread_self() }
            while !lock.withLock({ stopping }), let ctx = context {
                afterPoll = false
                if lws_service(ctx, 0) < 0 { break }
                // What this pass's callbacks posted, at once (tasks they resumed). What the drained work posts in turn
                // (a task's next job) did not wake the poll: it runs after the next pass, so reading sockets is never
                // starved, and that pass does not wait.
                drain()
                if lock.withLock({ !inbox.isEmpty }) { lws_cancel_service(ctx) }
            }
            // From now on `post` refuses (its callers answer their waiters themselves); what it took before runs now.
            lock.withLock {
                ended = true
                self.thread = nil
            }
            drain()
            finished.signal()
        }
        thread.stackSize = 1 << 20
        thread.start()
    }

    /// The context, for use on the service thread only.
    var lwsContext: OpaquePointer? { context }

    /// Queues `work` for the service thread. Returns false, and drops it, once the loop is stopping: callers
    /// that wait on the work's outcome must answer their waiters themselves then.
    @discardableResult
    func post(_ work: @escaping () -> Void) -> Bool {
        let (ctx, wake): (OpaquePointer?, Bool) = lock.withLock {
            guard !stopping, !ended, let context else { return (nil, false) }
            inbox.append(work)
            // Work posted by work being drained, or by a callback after this pass's poll, needs no wake-up: the loop
            // drains when the pass ends and looks at the inbox after each drain. Any other post does, from this
            // thread too: a callback of a timer (a timeout's close) runs before the poll in the same pass.
            return (context, !(onServiceThread && (draining || afterPoll)))
        }
        guard let ctx else { return false }
        if wake { lws_cancel_service(ctx) }
        return true
    }

    /// Under `lock`.
    private var onServiceThread: Bool { thread.map { pthread_equal($0, pthread_self()) != 0 } ?? false }


    /// Runs everything posted so far. Service thread only.
    func drain() {
        let work: [() -> Void] = lock.withLock {
            let w = inbox
            inbox.removeAll(keepingCapacity: true)
            return w
        }
        let outer = draining
        draining = true
        for (i, w) in work.enumerated() {
            unrun = work.count - i - 1
            w()
        }
        unrun = 0
        draining = outer
    }

    /// Work taken by `drain` and not yet run. Service thread only.
    private var unrun = 0
    /// This pass of `lws_service` has polled (a callback for data read says so). Service thread only.
    private var afterPoll = false

    /// Called by a callback that only runs for what the poll found (data received): posts from then on in this pass
    /// need no wake-up. Service thread only.
    func pollPassed() { afterPoll = true }
    /// `drain` is running work. Written on the service thread only; read under `lock` after checking that thread
    /// (as is `afterPoll`).
    private var draining = false

    /// True in work drained on the service thread (a task's job, a posted closure: not in an lws callback, where a
    /// connection's queue may be being written or emptied) with nothing posted still waiting to run: what the caller
    /// does now comes after everything posted before, as if it had been posted itself.
    var isServiceThreadWithNothingWaiting: Bool {
        lock.withLock { onServiceThread && draining && inbox.isEmpty } && unrun == 0
    }

    /// Stops the service thread, then destroys the context on this thread.
    func stop() {
        let ctx: OpaquePointer? = lock.withLock {
            if stopping { return nil }
            stopping = true
            return context
        }
        guard let ctx else { return }
        lws_cancel_service(ctx)
        finished.wait()  // the thread drained what was posted before it ended (posts are refused since)
        lws_context_destroy(ctx)
        lock.withLock { context = nil }
    }
}

/// Whether the calling thread services sockets (a server's or a client's lws context). Code that must never run there
/// (a signature, a blocking call) asserts that it does not: `assert(!SocketServiceThread.isCurrent)`.
public enum SocketServiceThread {
    nonisolated(unsafe) private static var key: pthread_key_t = {
        var key = pthread_key_t()
        pthread_key_create(&key, nil)
        return key
    }()

    static func mark() { pthread_setspecific(key, UnsafeRawPointer(bitPattern: 1)) }

    public static var isCurrent: Bool { pthread_getspecific(key) != nil }
}

/// Runs tasks' jobs on a service loop's thread, between its passes: a task that prefers it reads its socket's
/// messages, handles them and queues its replies without a hop to another thread (and back) for each. Its jobs
/// must not block: a wait there holds up every socket of the context.
final class ServiceExecutor: TaskExecutor, @unchecked Sendable {
    private let loop: ServiceLoop

    init(_ loop: ServiceLoop) { self.loop = loop }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        let executor = asUnownedTaskExecutor()
        // Once the loop is stopping a job runs on a thread of the global pool: a task must not be lost.
        if !loop.post({ job.runSynchronously(on: executor) }) {
            DispatchQueue.global().async { job.runSynchronously(on: executor) }
        }
    }
}

public enum ChannelError: Error, Equatable, CustomStringConvertible {
    case startFailed(String)
    case notConnected
    case timeout
    case closed
    case authenticationFailed(status: Int)
    case joinRefused(JSON)
    case invalidURL(String)
    /// A message the client would not send: the server's limit (`ChannelClient.peerMessageLimit`) is lower. The
    /// server would close the socket on it, and a resend on the next socket would be closed again, for ever.
    case messageTooLarge(bytes: Int, limit: Int)

    public var description: String {
        switch self {
        case .startFailed(let m): "could not start: \(m)"
        case .notConnected: "not connected"
        case .timeout: "no reply in time"
        case .closed: "the connection closed before a reply came"
        case .authenticationFailed(let s): "the server refused our credentials (HTTP \(s))"
        case .joinRefused(let r): "join refused: \(r.text)"
        case .invalidURL(let u): "invalid URL: \(u)"
        case .messageTooLarge(let bytes, let limit):
            "a message of \(bytes) bytes is over the server's limit of \(limit) bytes; it was not sent"
        }
    }
}

/// Copies a C string that lws hands us.
func lwsString(_ pointer: UnsafeMutableRawPointer?, _ length: Int) -> String {
    guard let pointer, length > 0 else { return "" }
    return String(decoding: UnsafeRawBufferPointer(start: pointer, count: length), as: UTF8.self)
}

/// Frees a strdup'ed C string array when the owner goes away.
final class CStrings: @unchecked Sendable {
    private var pointers: [UnsafeMutablePointer<CChar>] = []
    func make(_ s: String?) -> UnsafePointer<CChar>? {
        guard let s else { return nil }
        let p = strdup(s)!
        pointers.append(p)
        return UnsafePointer(p)
    }
    deinit { pointers.forEach { free($0) } }
}

/// Names the calling thread for the kernel (`/proc/PID/task/*/comm`, `perf --sort comm`, `top -H`): Foundation's
/// `Thread.name` is not passed on on Linux here, and every thread showed as a dispatch worker. At most 15 bytes.
public func nameCurrentThread(_ name: String) {
    Thread.current.name = name
    _ = clws_name_thread(String(name.utf8.prefix(15)) ?? "thread")
}
