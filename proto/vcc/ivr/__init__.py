"""IVR flow documents and the service catalog: pure models and checks shared by central and sites."""
