"""CRM side: the port the engine uses and the Dataverse Web API adapter."""
