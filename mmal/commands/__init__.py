"""click commands, one module per stage; each imports its library code lazily."""
