import ArgumentParser
import RuntimeWorker

struct RuntimeWorkerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "runtime-worker",
        abstract: "The lightning-runtime worker.",
        discussion: "Not implemented yet: this build only prints its version and help. The worker lands with issue 6.",
        version: RuntimeVersion.current)

    func run() throws {
        print("runtime-worker \(RuntimeVersion.current): the worker is not implemented in this build yet.")
        throw ExitCode(64)
    }
}
RuntimeWorkerCommand.main()
