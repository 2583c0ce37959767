import LightningProtocol

extension WorkflowDefinition {
    /// The plan options, with defaults for what the definition leaves out.
    public var planOptions: Plan.Options {
        let d = Plan.Options()
        return Plan.Options(
            runTimeoutMS: options.runTimeoutMS ?? d.runTimeoutMS, runMemoryLimitMB: options.runMemoryLimitMB ?? d.runMemoryLimitMB,
            outputDataclips: options.outputDataclips ?? d.outputDataclips, payloadLimitMB: options.payloadLimitMB ?? d.payloadLimitMB,
            logPayloadLimitMB: options.logPayloadLimitMB ?? d.logPayloadLimitMB, logLimitMB: options.logLimitMB ?? d.logLimitMB)
    }
}
