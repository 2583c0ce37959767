import Foundation
import Logging

/// Fires cron triggers. Each trigger's next due slot lives in the database and is advanced by compare-and-set in
/// the same transaction that creates the work order, so a slot fires once: across restarts, and even with two
/// schedulers on one database. A trigger seen for the first time is scheduled from its next slot; slots missed
/// while Lightning was down fire once on start (one catch-up run, not a burst).
public struct CronScheduler: Sendable {
    let store: any CronRepository
    let logger: Logger
    let onFire: @Sendable (CreatedWork) -> Void

    public init(store: any CronRepository, logger: Logger, onFire: @escaping @Sendable (CreatedWork) -> Void = { _ in }) {
        self.store = store
        self.logger = logger
        self.onFire = onFire
    }

    /// One pass at `now`: returns the work orders created.
    @discardableResult
    public func tick(now: Date) async throws -> [CreatedWork] {
        var created: [CreatedWork] = []
        for trigger in try await store.cronTriggers() {
            let expression: CronExpression
            do { expression = try CronExpression(trigger.expression) } catch {
                logger.error("bad cron expression", metadata: ["workflow": "\(trigger.workflowName)", "error": "\(error)"])
                continue
            }
            var due = trigger.nextSlot
            if due == nil {
                guard let first = expression.next(after: now) else { continue }
                due = try await store.scheduleCron(trigger, next: Self.micros(first))
            }
            guard let dueSlot = due, dueSlot <= Self.micros(now) else { continue }
            guard let next = expression.next(after: now) else { continue }
            if let work = try await store.fireCron(trigger, due: dueSlot, next: Self.micros(next)) {
                logger.info("cron trigger fired", metadata: [
                    "workflow": "\(trigger.workflowName)", "trigger": "\(trigger.triggerName)",
                    "slot": "\(Render.iso8601(dueSlot))", "attempt.id": "\(work.attemptID)",
                ])
                created.append(work)
                onFire(work)
            }
        }
        return created
    }

    /// Ticks at the start of every second until cancelled.
    public func run() async {
        while !Task.isCancelled {
            do { try await tick(now: Date()) } catch is CancellationError { return } catch {
                logger.error("cron scheduler pass failed", metadata: ["error": "\(error)"])
            }
            let fraction = Date().timeIntervalSince1970.truncatingRemainder(dividingBy: 1)
            try? await Task.sleep(for: .milliseconds(Int((1 - fraction) * 1000) + 5))
        }
    }

    static func micros(_ d: Date) -> Int64 { Int64((d.timeIntervalSince1970 * 1_000_000).rounded()) }
}
