import ServiceLifecycle

/// The janitor as a service: puts back the workers absent at start, then every `janitorIntervalSeconds` marks lost
/// the attempts of workers gone past the grace period (and overdue ones) and refreshes this replica's workers'
/// liveness. It stops when cancelled or at a graceful shutdown.
struct JanitorService: Service {
    let lightning: Lightning

    func run() async throws {
        await cancelWhenGracefulShutdown {
            await lightning.restoreAbsentWorkers()
            await lightning.runJanitor()
        }
    }
}

/// The cron scheduler as a service: work orders for cron triggers each minute, until cancelled or a graceful shutdown.
struct CronService: Service {
    let scheduler: CronScheduler

    func run() async throws {
        await cancelWhenGracefulShutdown { await scheduler.run() }
    }
}
