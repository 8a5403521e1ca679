"""Built-in REST resources, registered as default plugins."""
