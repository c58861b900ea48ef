"""Git integration: the filter process, configuration, attributes and drivers."""
