import Foundation

// Fuzz target: workflow definitions in YAML or JSON (Sources/Lightning/Workflows/WorkflowDefinition.swift, read by
// Yams) and their validation: `lightning workflows deploy` and `POST /api/workflows` take this text from an operator.
// Never crashes or hangs; what is accepted validates again, has a job to start from, and comes back equal from the
// JSON the store keeps (JSONEncoder → WorkflowDefinition.parse and → JSONDecoder).
let verbose = ProcessInfo.processInfo.environment["FUZZ_VERBOSE"] != nil  // say what each input came to

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: min(size, 4096)), as: UTF8.self)
    let definition: WorkflowDefinition
    do {
        definition = try WorkflowDefinition.parse(text)
    } catch let error as WorkflowValidationError {
        if verbose { print("refused: \(error)") }
        if error.problems.isEmpty || error.problems.contains(where: \.isEmpty) { fatalError("a refusal that says nothing") }
        return 0
    } catch {
        fatalError("parse threw something other than a WorkflowValidationError: \(error)")
    }
    if verbose { print("accepted: \(definition.name), starting at \(definition.startingJob ?? "-")") }
    do { try definition.validate() } catch { fatalError("accepted, then refused by validate(): \(error)") }
    if definition.startingJob == nil { fatalError("accepted without a job to start from") }
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    guard let json = try? encoder.encode(definition) else { fatalError("an accepted definition does not encode") }
    guard let decoded = try? JSONDecoder().decode(WorkflowDefinition.self, from: json), decoded == definition else {
        fatalError("the stored JSON does not decode to the same definition: \(String(decoding: json, as: UTF8.self))")
    }
    guard let reparsed = try? WorkflowDefinition.parse(String(decoding: json, as: UTF8.self)), reparsed == definition else {
        fatalError("the stored JSON does not parse to the same definition: \(String(decoding: json, as: UTF8.self))")
    }
    return 0
}
