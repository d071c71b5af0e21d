"""Administration of a running province: IVR flows and the service catalog."""
