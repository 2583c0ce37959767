@_exported import LightningProtocol
