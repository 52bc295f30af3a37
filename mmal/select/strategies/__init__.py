"""Built-in strategies, one module each; importing a module registers it."""
