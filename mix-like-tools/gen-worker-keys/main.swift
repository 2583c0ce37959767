import ArgumentParser
import JWT

struct GenWorkerKeys: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "gen-worker-keys")
    func run() throws { print("gen-worker-keys: not implemented yet") ; throw ExitCode(64) }
}
GenWorkerKeys.main()
