import ArgumentParser
import Lightning

struct LightningCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lightning",
        abstract: "The lightning-runtime orchestrator.",
        discussion: "Not implemented yet: this build only prints its version and help. `serve` lands with issue 4.",
        version: RuntimeVersion.current)

    func run() throws {
        print("lightning \(RuntimeVersion.current): the orchestrator is not implemented in this build yet.")
        throw ExitCode(64)
    }
}
LightningCommand.main()
