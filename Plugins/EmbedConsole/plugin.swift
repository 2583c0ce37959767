import Foundation
import PackagePlugin

/// Compiles the operator console's files (`Sources/Lightning/Console`, excluded from the target as sources) into
/// the `lightning` binary: one generated Swift file of string literals, rebuilt whenever a console file changes.
/// Nothing is fetched and nothing is read from disk at run time.
@main
struct EmbedConsole: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: any Target) throws -> [Command] {
        let directory = target.directoryURL.appending(path: "Console")
        var files: [URL] = []
        if let walk = FileManager.default.enumerator(at: directory, includingPropertiesForKeys: [.isRegularFileKey]) {
            for case let url as URL in walk where (try? url.resourceValues(forKeys: [.isRegularFileKey]))?.isRegularFile == true {
                files.append(url)
            }
        }
        files.sort { $0.path < $1.path }
        let output = context.pluginWorkDirectoryURL.appending(path: "ConsoleAssets.swift")
        return [.buildCommand(
            displayName: "Embedding \(files.count) console files",
            executable: try context.tool(named: "embed-assets").url,
            arguments: [directory.path, output.path],
            inputFiles: files,
            outputFiles: [output])]
    }
}
